/**
 * One token bucket per process over every connection (origin and peers). Takers go into debt and
 * wait until the bucket has earned it back, so the long-run rate is exact whatever the piece
 * sizes, and concurrent takers are served in order. The burst is kept small (50 ms of rate) so a
 * short run is not flattered by a full bucket.
 *
 * Pure: time comes from an injected Clock (the real one by default), so the CLI, the daemon, the
 * engine and the peer server share it without reaching into each other, and tests run it on fake
 * time.
 */

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realClock: Clock = {
  now: () => performance.now(),
  // Not unref'd: a timer exists only while a taker waits, and that taker is real work.
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

interface Waiter {
  mark: number;
  resolve: () => void;
  reject: (e: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

export class RateLimiter {
  private bps: number;
  /** Bytes the bucket has paid out, in total. */
  private consumed = 0;
  /** Bytes the bucket has earned, in total (starts one burst ahead). */
  private earned = 0;
  private last: number;
  private readonly waiters: Waiter[] = [];
  private timer: unknown;

  /** `bytesPerSecond` 0 means unlimited. */
  constructor(bytesPerSecond: number, private readonly clock: Clock = realClock) {
    this.bps = sanitize(bytesPerSecond);
    this.last = clock.now();
    this.earned = this.burst();
  }

  get rate(): number {
    return this.bps;
  }

  /** Change the rate at run time; waiting takers are rescheduled under the new rate. */
  setRate(bytesPerSecond: number): void {
    this.refill();
    this.bps = sanitize(bytesPerSecond);
    if (this.bps === 0) {
      this.earned = this.consumed;
      for (const w of this.waiters.splice(0)) settle(w);
      this.clearTimer();
      return;
    }
    // Leaving unlimited (or lowering the rate) starts from an empty-ish bucket, not a windfall.
    this.earned = Math.min(this.earned, this.consumed + this.burst());
    this.last = this.clock.now();
    this.schedule();
  }

  /**
   * Take `n` bytes. Resolves at once (returns undefined) when unlimited or when the bucket holds
   * enough; otherwise returns a promise that resolves when the bytes have been earned.
   */
  take(n: number, signal?: AbortSignal): Promise<void> | undefined {
    if (this.bps === 0 || n <= 0) return undefined;
    this.refill();
    this.consumed += n;
    if (this.waiters.length === 0 && this.consumed <= this.earned) return undefined;
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { mark: this.consumed, resolve, reject, signal, onAbort: undefined };
      if (signal) {
        if (signal.aborted) return reject(signal.reason);
        w.onAbort = () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(signal.reason);
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.waiters.push(w);
      if (this.waiters.length === 1) this.schedule();
    });
  }

  private burst(): number {
    return Math.max(16 * 1024, this.bps * 0.05);
  }

  private refill(): void {
    const now = this.clock.now();
    if (this.bps > 0) {
      this.earned += ((now - this.last) / 1000) * this.bps;
      // An idle bucket holds at most one burst.
      const cap = this.consumed + this.burst();
      if (this.waiters.length === 0 && this.earned > cap) this.earned = cap;
    }
    this.last = now;
  }

  private clearTimer(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    this.clearTimer();
    const head = this.waiters[0];
    if (!head || this.bps === 0) return;
    const ms = Math.max(0, ((head.mark - this.earned) / this.bps) * 1000);
    this.timer = this.clock.setTimeout(() => this.wake(), Math.ceil(ms));
  }

  private wake(): void {
    this.timer = undefined;
    this.refill();
    while (this.waiters.length > 0 && this.waiters[0]!.mark <= this.earned + 1e-6) settle(this.waiters.shift()!);
    this.schedule();
  }
}

function settle(w: Waiter): void {
  if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
  w.resolve();
}

function sanitize(bps: number): number {
  if (!Number.isFinite(bps) || bps < 0) throw new RangeError(`invalid rate ${bps}`);
  return bps;
}
