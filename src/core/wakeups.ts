/**
 * Waiters keyed by a name (a blob): `wait` resolves on the next `wake` of its key, after `ms`, or
 * when `signal` aborts, whichever comes first. Never rejects: the caller looks again at what it
 * waits for and decides. A key with no waiter left holds no memory.
 */
export class KeyedWakeups {
  private readonly waiters = new Map<string, Set<() => void>>();

  wait(key: string, ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let set = this.waiters.get(key);
      if (!set) this.waiters.set(key, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        set!.delete(done);
        if (set!.size === 0 && this.waiters.get(key) === set) this.waiters.delete(key);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  wake(key: string): void {
    for (const fn of [...(this.waiters.get(key) ?? [])]) fn();
  }

  /** Whether anyone waits on `key` now. */
  has(key: string): boolean {
    return this.waiters.has(key);
  }
}

/**
 * Wait in `queue` until whoever owns it calls our entry, or `signal` aborts: then the entry
 * leaves the queue and the promise rejects with the signal's reason. `onGo` runs as the entry is
 * called, before anything else can take what it was woken for.
 */
export function queuedWait(queue: Array<() => void>, signal: AbortSignal, onGo?: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const go = () => {
      signal.removeEventListener('abort', onAbort);
      onGo?.();
      resolve();
    };
    const onAbort = () => {
      const i = queue.indexOf(go);
      if (i >= 0) queue.splice(i, 1);
      reject(signal.reason);
    };
    queue.push(go);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
