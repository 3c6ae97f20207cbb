import { describe, expect, it } from 'vitest';
import { RateLimiter, type Clock } from '../../src/core/rate-limiter.js';

/** Let every pending promise callback run (readers get to their next take). */
const settle = () => new Promise<void>((r) => setImmediate(r));

/** A fake clock: time moves only when the test says so, timers fire in order. */
class FakeClock implements Clock {
  t = 0;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private ids = 0;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.ids;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h);
  }
  /** Timers set and not yet fired or cleared. */
  pending(): number {
    return this.timers.length;
  }
  /** Advance to the next timer (or by `max`), fire it, let promise callbacks run. */
  async step(max = Infinity): Promise<boolean> {
    this.timers.sort((a, b) => a.at - b.at);
    const next = this.timers[0];
    if (!next || next.at - this.t > max) {
      this.t += max === Infinity ? 0 : max;
      return false;
    }
    this.timers.shift();
    this.t = Math.max(this.t, next.at);
    next.fn();
    await settle();
    return true;
  }
}

/** N concurrent readers pulling `piece`-sized reads as fast as the limiter allows, for `ms` of fake time. */
async function simulate(limiter: RateLimiter, clock: FakeClock, readers: number, piece: number, ms: number, onTick?: (t: number) => void): Promise<number> {
  let bytes = 0;
  let stop = false;
  const loops = Array.from({ length: readers }, async () => {
    while (!stop) {
      const w = limiter.take(piece);
      if (w) await w;
      if (stop) break;
      bytes += piece;
      // Yield so the other readers interleave as sockets would.
      await Promise.resolve();
    }
  });
  await settle();
  while (clock.t < ms) {
    onTick?.(clock.t);
    if (!(await clock.step(ms - clock.t))) break;
  }
  stop = true;
  limiter.setRate(0); // release the waiters
  await Promise.all(loops);
  return bytes;
}

describe('RateLimiter', () => {
  it('holds 16 connections to the rate within 5 %', async () => {
    const clock = new FakeClock();
    const rate = 50e6;
    const limiter = new RateLimiter(rate, clock);
    const bytes = await simulate(limiter, clock, 16, 64 * 1024, 10_000);
    const measured = bytes / 10;
    expect(Math.abs(measured - rate) / rate).toBeLessThan(0.05);
  });

  it('holds odd piece sizes and a low rate within 5 %', async () => {
    const clock = new FakeClock();
    const rate = 300_000;
    const limiter = new RateLimiter(rate, clock);
    const bytes = await simulate(limiter, clock, 3, 16_411, 20_000);
    expect(Math.abs(bytes / 20 - rate) / rate).toBeLessThan(0.05);
  });

  it('changes rate at run time', async () => {
    const clock = new FakeClock();
    const limiter = new RateLimiter(10e6, clock);
    let atSwitch = -1;
    let counted = 0;
    const origTake = limiter.take.bind(limiter);
    limiter.take = (n, s) => {
      counted += n;
      return origTake(n, s);
    };
    const bytes = await simulate(limiter, clock, 8, 32 * 1024, 10_000, (t) => {
      if (t >= 5_000 && atSwitch < 0) {
        atSwitch = counted;
        limiter.setRate(40e6);
      }
    });
    // Each half is measured against its own rate: a switch that did not take effect, or that
    // let the waiting takers keep their old schedule, misses one of them by far more than 5 %.
    const first = atSwitch / 5;
    const second = (bytes - atSwitch) / 5;
    expect(Math.abs(first - 10e6) / 10e6).toBeLessThan(0.05);
    expect(Math.abs(second - 40e6) / 40e6).toBeLessThan(0.05);
  });

  it('a taker already waiting is rescheduled under a new rate', async () => {
    const clock = new FakeClock();
    const limiter = new RateLimiter(1_000, clock);
    // One burst (16 KiB) is free; the other 10 kB would take 10 s at 1 kB/s.
    let resolvedAt: number | undefined;
    void limiter.take(16 * 1024 + 10_000)!.then(() => (resolvedAt = clock.t));
    await clock.step(1_000);
    expect(resolvedAt).toBeUndefined();
    limiter.setRate(100_000);
    while (resolvedAt === undefined && (await clock.step())) {
      /* fire the rescheduled timer */
    }
    // At 100 kB/s the remaining debt takes about 0.1 s, not the 9 s the old rate still owed.
    expect(resolvedAt).toBeDefined();
    expect(resolvedAt!).toBeLessThan(1_500);
  });

  it('0 means unlimited: no take waits, no timer is set, and waiting takers are released at once', async () => {
    const clock = new FakeClock();
    const unlimited = new RateLimiter(0, clock);
    for (const n of [1, 64 * 1024, 1e12]) expect(unlimited.take(n)).toBeUndefined();
    expect(clock.pending()).toBe(0);
    expect(() => new RateLimiter(-1)).toThrow(RangeError);
    expect(() => new RateLimiter(Number.NaN)).toThrow(RangeError);

    const limited = new RateLimiter(1_000, clock);
    const waiting = [limited.take(100_000), limited.take(10)];
    let released = 0;
    for (const w of waiting) void w!.then(() => released++);
    await settle();
    expect(released).toBe(0);
    limited.setRate(0);
    await settle();
    // Released without any timer firing: lifting the limit must not leave takers parked.
    expect(released).toBe(2);
  });

  it('an aborted waiter leaves the queue', async () => {
    const clock = new FakeClock();
    const limiter = new RateLimiter(1000, clock);
    void limiter.take(100_000);
    const ac = new AbortController();
    const w = limiter.take(10, ac.signal)!;
    ac.abort(new Error('gone'));
    await expect(w).rejects.toThrow('gone');
  });
});
