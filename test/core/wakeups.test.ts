import { describe, expect, it } from 'vitest';
import { KeyedWakeups, queuedWait } from '../../src/core/wakeups.js';

describe('KeyedWakeups', () => {
  it('wakes the waiters of one key only, and forgets a key with no waiter left', async () => {
    const w = new KeyedWakeups();
    let a = false;
    let b = false;
    const pa = w.wait('a', 10_000).then(() => (a = true));
    void w.wait('b', 10_000).then(() => (b = true));
    w.wake('a');
    await pa;
    expect([a, b]).toEqual([true, false]);
    expect(w.has('a')).toBe(false);
    expect(w.has('b')).toBe(true);
    w.wake('b');
  });

  it('resolves after its time, or at once when the signal aborts', async () => {
    const w = new KeyedWakeups();
    const t0 = performance.now();
    await w.wait('x', 30);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
    const ac = new AbortController();
    const p = w.wait('x', 10_000, ac.signal);
    ac.abort();
    await p;
    expect(w.has('x')).toBe(false);
  });
});

describe('queuedWait', () => {
  it('goes when its entry is called, running onGo first; an abort takes it out of the queue', async () => {
    const queue: Array<() => void> = [];
    let taken = 0;
    const first = queuedWait(queue, new AbortController().signal, () => taken++);
    const ac = new AbortController();
    const second = queuedWait(queue, ac.signal, () => taken++);
    expect(queue).toHaveLength(2);
    ac.abort(new Error('gone'));
    await expect(second).rejects.toThrow('gone');
    expect(queue).toHaveLength(1);
    queue.shift()!();
    await first;
    expect(taken).toBe(1);
  });
});
