/**
 * Prometheus metrics, prefix `swift_fetch_`, in a registry of our own (never prom-client's global
 * one, so two daemons in one test process do not collide). Gauges that mirror state are computed
 * at scrape time from the reconciler, the limiter and the store.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ByteSource } from '../core/transfer.js';
import { MODEL_STATES, type ModelStatus } from './reconciler.js';

export interface MetricsSources {
  models: () => ModelStatus[];
  activeTransfers: () => number;
  rateLimit: () => number;
  storeUsage: () => Promise<{ usedBytes: number; freeBytes: number }>;
}

export const METRICS_PREFIX = 'swift_fetch_';

export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly bytes: Counter<'source'>;
  private readonly verificationFailures: Counter;
  private readonly pulls: Counter<'result'>;
  private readonly gcFreed: Counter;

  constructor(src: MetricsSources) {
    const registers = [this.registry];
    const p = METRICS_PREFIX;
    this.bytes = new Counter({ name: `${p}bytes_received_total`, help: 'Model bytes received, by source (origin hub/CDN or peer)', labelNames: ['source'], registers });
    this.bytes.inc({ source: 'origin' }, 0);
    this.bytes.inc({ source: 'peer' }, 0);
    this.verificationFailures = new Counter({ name: `${p}verification_failures_total`, help: 'Pulls that failed integrity verification', registers });
    this.pulls = new Counter({ name: `${p}pulls_total`, help: 'Finished pull attempts, by result', labelNames: ['result'], registers });
    this.pulls.inc({ result: 'success' }, 0);
    this.pulls.inc({ result: 'failure' }, 0);
    this.gcFreed = new Counter({ name: `${p}gc_freed_bytes_total`, help: 'Bytes freed by garbage collection', registers });
    new Gauge({
      name: `${p}active_transfers`,
      help: 'Model pulls in progress',
      registers,
      collect() {
        this.set(src.activeTransfers());
      },
    });
    new Gauge({
      name: `${p}models`,
      help: 'Models known to the daemon, by state',
      labelNames: ['state'],
      registers,
      collect() {
        const counts = Object.fromEntries(MODEL_STATES.map((s) => [s, 0])) as Record<string, number>;
        for (const m of src.models()) counts[m.state]!++;
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
    new Gauge({
      name: `${p}rate_limit_bytes_per_second`,
      help: 'Current download rate limit in bytes per second (0 = unlimited)',
      registers,
      collect() {
        this.set(src.rateLimit());
      },
    });
    new Gauge({
      name: `${p}store_bytes`,
      help: 'Store space: bytes used by content blobs, bytes free on its filesystem',
      labelNames: ['kind'],
      registers,
      async collect() {
        try {
          const u = await src.storeUsage();
          this.set({ kind: 'used' }, u.usedBytes);
          this.set({ kind: 'free' }, u.freeBytes);
        } catch {
          /* an unreadable store shows as missing samples, and /readyz says why */
        }
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: p });
  }

  addBytes(source: ByteSource, n: number): void {
    this.bytes.inc({ source }, n);
  }

  pullFinished(ok: boolean, integrityFailure: boolean): void {
    this.pulls.inc({ result: ok ? 'success' : 'failure' });
    if (integrityFailure) this.verificationFailures.inc();
  }

  gcFreedBytes(n: number): void {
    this.gcFreed.inc(n);
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
