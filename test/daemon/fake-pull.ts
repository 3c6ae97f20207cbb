/**
 * A scripted pull function for reconciler and API tests (the real one is exercised by the
 * end-to-end tests against the fake hub). Each call follows the script for its ref and records
 * what it was called with.
 */
import { NetworkError, NotFoundError } from '../../src/core/errors.js';
import { formatRef, type ModelRef } from '../../src/core/ref.js';
import type { PullFn } from '../../src/daemon/reconciler.js';
import type { PullOptions } from '../../src/pull/index.js';

/** 'blockfail' waits for a release like 'block', then fails like 'fail'. */
export type Step = 'ok' | 'fail' | 'notfound' | 'block' | 'blockfail';

export interface FakePull {
  pull: PullFn;
  calls: Array<{ ref: string; opts: PullOptions }>;
  /** Steps per ref key (`hf://o/n@main`), consumed in order; the last one repeats. */
  script: Map<string, Step[]>;
  /** Release a blocked pull of `ref` (emits progress in two steps, then publishes). */
  release(ref: string): void;
  running(): number;
  maxRunning: number;
}

export const COMMIT = 'c0ffee'.padEnd(40, '0');

export function fakePull(bytesTotal = 1000): FakePull {
  const calls: FakePull['calls'] = [];
  const script = new Map<string, Step[]>();
  const releases = new Map<string, Array<() => void>>();
  const early = new Map<string, number>();
  let running = 0;
  const self: FakePull = {
    calls,
    script,
    maxRunning: 0,
    running: () => running,
    release(ref) {
      // A release that arrives before the pull reached its blocking point is kept for it.
      const list = releases.get(ref);
      const waiter = list?.shift();
      if (waiter) waiter();
      else early.set(ref, (early.get(ref) ?? 0) + 1);
    },
    pull: async (ref: ModelRef, opts: PullOptions) => {
      const key = formatRef(ref);
      calls.push({ ref: key, opts });
      const steps = script.get(key) ?? ['ok'];
      const step = steps.length > 1 ? steps.shift()! : steps[0]!;
      running++;
      self.maxRunning = Math.max(self.maxRunning, running);
      try {
        await new Promise((r) => setImmediate(r));
        if (step === 'notfound') throw new NotFoundError(`repository ${key} not found`);
        opts.onEvent?.({ type: 'resolved', ref: key, commit: COMMIT, files: 2, bytesTotal });
        opts.onEvent?.({ type: 'progress', bytesDone: 0, bytesTotal, source: 'origin' });
        if (step === 'fail') throw new NetworkError('connection reset by origin (simulated)');
        if (step === 'block' || step === 'blockfail') {
          await new Promise<void>((resolve, reject) => {
            const pending = early.get(key) ?? 0;
            if (pending > 0) {
              early.set(key, pending - 1);
              return resolve();
            }
            const list = releases.get(key) ?? releases.set(key, []).get(key)!;
            list.push(resolve);
            opts.signal?.addEventListener(
              'abort',
              () => {
                // An aborted pull no longer takes a release meant for the next one.
                if (list.includes(resolve)) list.splice(list.indexOf(resolve), 1);
                reject(opts.signal!.reason);
              },
              { once: true },
            );
          });
        }
        if (step === 'blockfail') throw new NetworkError('connection reset by origin (simulated)');
        // Half the bytes from the origin, half from a peer: what the engine reports as they arrive,
        // then the pull's running total.
        opts.engineHooks?.onEvent?.({ type: 'progress', key: { kind: 'path', commit: COMMIT, path: `fake:${key}` }, bytes: bytesTotal / 2, source: 'origin' });
        opts.onEvent?.({ type: 'progress', bytesDone: bytesTotal / 2, bytesTotal, source: 'origin' });
        opts.engineHooks?.onEvent?.({ type: 'progress', key: { kind: 'path', commit: COMMIT, path: `fake:${key}` }, bytes: bytesTotal / 2, source: 'peer' });
        opts.onEvent?.({ type: 'progress', bytesDone: bytesTotal, bytesTotal, source: 'peer' });
        opts.onEvent?.({ type: 'verifying' });
        const path = `/store/models/${ref.hub}/${ref.org}/${ref.name}/${COMMIT}`;
        opts.onEvent?.({ type: 'published', path, commit: COMMIT });
        return { commit: COMMIT, path, bytesDownloaded: bytesTotal, alreadyComplete: false };
      } finally {
        running--;
      }
    },
  };
  return self;
}
