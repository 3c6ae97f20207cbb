/** `swift_fetch_mirror_*` metrics, registered in the daemon's registry (see src/daemon/metrics.ts). */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { ModelHub } from '../core/ref.js';

export const MIRROR_PREFIX = 'swift_fetch_mirror_';

export class MirrorMetrics {
  private readonly requests: Counter<'hub' | 'route'>;
  private readonly hits: Counter<'hub'>;
  private readonly misses: Counter<'hub'>;
  private readonly bytes: Counter<'hub'>;
  private waitingNow = 0;

  constructor(registry: Registry) {
    const registers = [registry];
    const p = MIRROR_PREFIX;
    this.requests = new Counter({ name: `${p}requests_total`, help: 'ModelHub protocol requests to the mirror, by hub and route', labelNames: ['hub', 'route'], registers });
    this.hits = new Counter({ name: `${p}hits_total`, help: 'File downloads served from the store', labelNames: ['hub'], registers });
    this.misses = new Counter({ name: `${p}misses_total`, help: 'File downloads that had to wait for a fetch (pull-through)', labelNames: ['hub'], registers });
    this.bytes = new Counter({ name: `${p}bytes_served_total`, help: 'File bytes sent to clients', labelNames: ['hub'], registers });
    for (const hub of ['hf', 'ms'] as const) {
      this.hits.inc({ hub }, 0);
      this.misses.inc({ hub }, 0);
      this.bytes.inc({ hub }, 0);
    }
    const self = this;
    new Gauge({
      name: `${p}clients_waiting`,
      help: 'Client downloads waiting for bytes that are not yet downloaded or verified',
      registers,
      collect() {
        this.set(self.waitingNow);
      },
    });
  }

  request(hub: ModelHub, route: string): void {
    this.requests.inc({ hub, route });
  }

  hit(hub: ModelHub): void {
    this.hits.inc({ hub });
  }

  miss(hub: ModelHub): void {
    this.misses.inc({ hub });
  }

  served(hub: ModelHub, n: number): void {
    if (n > 0) this.bytes.inc({ hub }, n);
  }

  waiting(delta: 1 | -1): void {
    this.waitingNow += delta;
  }

  get clientsWaiting(): number {
    return this.waitingNow;
  }
}
