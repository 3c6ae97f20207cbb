import { describe, expect, it } from 'vitest';
import { HUB_API_BACKOFF, TRANSFER_BACKOFF, backoffDelay, parseRetryAfter } from '../../src/core/retry.js';

describe('backoffDelay (the one retry schedule)', () => {
  const p = { baseMs: 100, maxMs: 1_000, maxRetryAfterMs: 5_000 };

  it('doubles per failure up to the cap, with half of each step fixed and half random', () => {
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, p, undefined, () => 1))).toEqual([100, 200, 400, 800, 1_000]);
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, p, undefined, () => 0))).toEqual([50, 100, 200, 400, 500]);
    // A long streak stays at the cap (no overflow to Infinity or NaN).
    expect(backoffDelay(10_000, p, undefined, () => 1)).toBe(1_000);
  });

  it('takes a server-requested wait instead, bounded by maxRetryAfterMs (or by maxMs without one)', () => {
    expect(backoffDelay(1, p, 3_000, () => 1)).toBe(3_000);
    expect(backoffDelay(1, p, 86_400_000, () => 1)).toBe(5_000);
    expect(backoffDelay(1, { baseMs: 100, maxMs: 1_000 }, 86_400_000)).toBe(1_000);
    expect(backoffDelay(1, p, parseRetryAfter('2'))).toBe(2_000);
  });

  it('hub API calls start sooner than chunk requests, both cap at 30 s', () => {
    expect(backoffDelay(1, HUB_API_BACKOFF, undefined, () => 1)).toBeLessThan(backoffDelay(1, TRANSFER_BACKOFF, undefined, () => 1));
    expect(backoffDelay(99, HUB_API_BACKOFF, undefined, () => 1)).toBe(30_000);
    expect(backoffDelay(99, TRANSFER_BACKOFF, undefined, () => 1)).toBe(30_000);
  });
});
