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

export interface PeerMetricsSources {
  onAdd(fn: (name: string, delta: number) => void): void;
  peerStates(): { live: number; down: number; quarantined: number };
  activeUploads(): number;
}

export const METRICS_PREFIX = 'swift_fetch_';

export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly bytes: Counter<'source'>;
  private readonly verificationFailures: Counter;
  private readonly pulls: Counter<'result'>;
  private readonly gcFreed: Counter;
  private readonly apiRefused: Counter<'reason'>;

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
    this.apiRefused = new Counter({ name: `${p}api_refused_total`, help: 'API requests refused, by reason (unauthorized, forbidden, rate_limited, too_many_models)', labelNames: ['reason'], registers });
    for (const reason of ['unauthorized', 'forbidden', 'rate_limited', 'too_many_models']) this.apiRefused.inc({ reason }, 0);
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

  /** Peer-side figures of the P2P node: counters fed by its increments, gauges read at scrape time. */
  attachPeers(src: PeerMetricsSources): void {
    const p = METRICS_PREFIX;
    const registers = [this.registry];
    const counter = (name: string, help: string, labelNames: string[] = []) => new Counter({ name: `${p}${name}`, help, labelNames, registers });
    const served = counter('peer_bytes_served_total', 'Bytes served to peers');
    const uploads = counter('peer_uploads_total', 'Peer data requests, by result', ['result']);
    const unauthorized = counter('peer_unauthorized_total', 'Peer requests refused for a missing or wrong peer token');
    const errors = counter('peer_errors_total', 'Requests to peers that failed');
    const timeouts = counter('peer_wait_timeouts_total', 'Chunks taken from the origin after a peer did not deliver in time');
    const quarantines = counter('peer_quarantines_total', 'Peers quarantined for serving bytes that failed verification');
    uploads.inc({ result: 'served' }, 0);
    uploads.inc({ result: 'rejected' }, 0);
    src.onAdd((name, delta) => {
      if (name === 'bytesServed') served.inc(delta);
      else if (name === 'uploads') uploads.inc({ result: 'served' }, delta);
      else if (name === 'uploadsRejected') uploads.inc({ result: 'rejected' }, delta);
      else if (name === 'unauthorized') unauthorized.inc(delta);
      else if (name === 'peerErrors') errors.inc(delta);
      else if (name === 'peerTimeouts') timeouts.inc(delta);
      else if (name === 'quarantines') quarantines.inc(delta);
    });
    new Gauge({
      name: `${p}peers`,
      help: 'Known peers, by state',
      labelNames: ['state'],
      registers,
      collect() {
        const s = src.peerStates();
        for (const [state, n] of Object.entries(s)) this.set({ state }, n);
      },
    });
    new Gauge({
      name: `${p}peer_active_uploads`,
      help: 'Peer data requests being served now',
      registers,
      collect() {
        this.set(src.activeUploads());
      },
    });
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

  apiRefusedRequest(reason: string): void {
    this.apiRefused.inc({ reason });
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
