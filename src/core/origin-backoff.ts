/**
 * A polite cluster: when an origin (a hub, a CDN host) answers 429 or 503 with a Retry-After, every
 * request this process makes to it waits that long, not only the one that was refused; and the
 * node passes the wish on to its peers (src/p2p), so the hub sees the cluster slow down, not N
 * strangers each learning the same lesson. Keyed by URL origin (scheme, host, port). Pure: the
 * clock is injected; waiting uses the shared sleep.
 */
import { sleep } from './sleep.js';

/** Longest wait anyone can impose (a peer's or a server's): a typo must not stop a cluster for a day. */
export const MAX_BACKOFF_MS = 10 * 60_000;

export type BackoffSource = 'origin' | 'peer';

export class OriginBackoff {
  private readonly until = new Map<string, number>();
  private readonly listeners = new Set<(origin: string, untilMs: number, from: BackoffSource) => void>();

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * `origin` asked (directly, or through a peer) for no requests for `waitMs`. Returns whether it
   * moved the deadline (an older, shorter wish is replaced; a longer one stays).
   */
  note(origin: string, waitMs: number, from: BackoffSource = 'origin'): boolean {
    if (!(waitMs > 0)) return false;
    const until = this.now() + Math.min(waitMs, MAX_BACKOFF_MS);
    if ((this.until.get(origin) ?? 0) >= until) return false;
    this.until.set(origin, until);
    for (const l of this.listeners) l(origin, until, from);
    return true;
  }

  /** Milliseconds before `origin` may be asked again (0 when it may now). */
  remaining(origin: string): number {
    const u = this.until.get(origin);
    if (u === undefined) return 0;
    const left = u - this.now();
    if (left <= 0) this.until.delete(origin);
    return Math.max(0, left);
  }

  /** Wait until none of `origins` asked for a pause any more. */
  async wait(origins: readonly string[], signal: AbortSignal): Promise<void> {
    for (;;) {
      const left = Math.max(0, ...origins.map((o) => this.remaining(o)));
      if (left === 0) return;
      await sleep(left, signal);
    }
  }

  /** Be told of every deadline that moved (to pass it on). Returns an unsubscribe. */
  onNote(fn: (origin: string, untilMs: number, from: BackoffSource) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}
