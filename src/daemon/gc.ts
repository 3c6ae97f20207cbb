/**
 * The daemon's side of garbage collection: what it must keep (the pinning policy) and when it
 * collects (a few seconds after each finished pull, then every `gc.interval`). The collection
 * itself is the store's (src/store/gc.ts). Stops scheduling when the daemon's signal aborts and
 * lets a collection in progress finish.
 */
import type { Logger } from 'pino';
import { repoKey } from '../core/ref.js';
import { revisionKey, runGc, type GcResult } from '../store/gc.js';
import type { Store } from '../store/store.js';
import type { DaemonConfig } from './config.js';
import type { Reconciler } from './reconciler.js';
import { onShutdown } from './shutdown.js';

/**
 * Keys GC must not evict: every declared model at the commit the daemon resolved or the store's
 * local ref names; a declared model never resolved here and never pulled into this store under
 * that name is protected as a whole repo.
 */
export async function pinnedKeys(store: Store, reconciler: Reconciler): Promise<Set<string>> {
  const pinned = new Set<string>();
  const statuses = new Map(reconciler.list().map((s) => [s.ref, s]));
  for (const spec of reconciler.declaredSpecs()) {
    const known = [statuses.get(spec.key)?.commit, await store.localCommit(spec.ref, spec.ref.revision).catch(() => undefined)];
    const commits = known.filter((c): c is string => typeof c === 'string');
    if (commits.length === 0) pinned.add(repoKey(spec.ref));
    for (const c of commits) pinned.add(revisionKey({ ...spec.ref, commit: c }));
  }
  return pinned;
}

export interface GcLoopOptions {
  config: DaemonConfig;
  store: Store;
  reconciler: Reconciler;
  logger: Logger;
  /** Lease holder name of this daemon (GC takes its own lease). */
  holder: string;
  sweepGraceMs?: number | undefined;
  /** After each collection that ran (metrics, caches). */
  onCollected: (res: GcResult) => void;
  signal: AbortSignal;
}

export interface GcLoop {
  /** Run one collection now (no-op without gc.maxBytes, or once the daemon stops). */
  collect(): Promise<GcResult | undefined>;
  /** Collect `delayMs` from now, then every `gc.interval`. */
  schedule(delayMs: number): void;
  /** Settles when the loop has stopped and no collection is running. */
  readonly closed: Promise<void>;
}

export function startGcLoop(o: GcLoopOptions): GcLoop {
  const { config, store, reconciler, signal } = o;
  const log = o.logger.child({ module: 'daemon' });
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<GcResult | undefined> | undefined;

  const once = async (): Promise<GcResult | undefined> => {
    try {
      const res = await runGc(store, {
        maxBytes: config.gc.maxBytes,
        pinned: await pinnedKeys(store, reconciler),
        inUse: reconciler.inUseKeys(),
        holder: `gc:${o.holder}`,
        ...(o.sweepGraceMs === undefined ? {} : { sweepGraceMs: o.sweepGraceMs }),
      });
      if (res.ran && (res.evicted.length > 0 || res.freedBlobs > 0)) {
        log.info({ evicted: res.evicted.map((e) => `${e.ref}@${e.commit}`), freedBytes: res.freedBytes, usedBytes: res.usedBytesAfter }, 'garbage collected');
      }
      if (res.overQuota) log.warn({ usedBytes: res.usedBytesAfter, maxBytes: config.gc.maxBytes }, 'store over quota; only declared or in-use models remain');
      o.onCollected(res);
      return res;
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'garbage collection failed');
      return undefined;
    }
  };

  const collect = (): Promise<GcResult | undefined> => {
    if (config.gc.maxBytes <= 0 || signal.aborted) return Promise.resolve(undefined);
    running ??= once().finally(() => (running = undefined));
    return running;
  };

  const schedule = (delayMs: number): void => {
    if (signal.aborted || config.gc.maxBytes <= 0) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      void collect().finally(() => schedule(config.gc.intervalMs));
    }, delayMs);
    timer.unref();
  };

  const closed = onShutdown(signal, async () => {
    if (timer) clearTimeout(timer);
    await running;
  });

  return { collect, schedule, closed };
}
