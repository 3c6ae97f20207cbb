/**
 * Keeps the daemon's view in step with the store, which other processes change too: `swift-fetch
 * rm`, a `swift-fetch bundle import` or pull by hand, a collection on another node. Every interval
 * it looks at each model it tracks: a ready one whose publish record is gone is lost (pulled again
 * if declared), a pending or failed one that the store now holds is ready. It reads only records
 * and local refs, a few small files per model, so it also works where the store is a network
 * volume that sends no change events. A store that is gone altogether is left alone.
 */
import { access } from 'node:fs/promises';
import type { Logger } from 'pino';
import { NotFoundError } from '../core/errors.js';
import type { Store } from '../store/store.js';
import type { ModelSpec } from './config.js';
import type { HeldRevision, Reconciler } from './reconciler.js';
import { onShutdown } from './shutdown.js';

/**
 * The revision the store holds for a model's declared revision (through its local ref), when it
 * can stand for the model: complete, or the model itself asks only for some files.
 */
export async function heldRevision(store: Store, spec: ModelSpec): Promise<HeldRevision | undefined> {
  try {
    const rec = await store.findRecord(spec.ref, spec.ref.revision);
    if (!rec.complete && !spec.include && !spec.exclude) return undefined;
    return { commit: rec.commit, path: rec.paths.plain, bytes: rec.bytes };
  } catch (e) {
    if (e instanceof NotFoundError) return undefined;
    throw e;
  }
}

export interface StoreSyncOptions {
  store: Store;
  reconciler: Reconciler;
  intervalMs: number;
  logger: Logger;
  signal: AbortSignal;
}

/** Look at the store every `intervalMs` (0: never) until the signal aborts; `closed` settles after the last look. */
export function startStoreSync(o: StoreSyncOptions): { closed: Promise<void>; syncNow(): Promise<void> } {
  const { store, reconciler, signal } = o;
  const log = o.logger.child({ module: 'store-sync' });
  let running: Promise<void> | undefined;

  let storeGone = false;
  const once = async (): Promise<void> => {
    // No store at all is an unmounted or replaced volume, not models removed one by one: pulling
    // them again would write into whatever is under the mount point. Wait for it to come back.
    const present = (): Promise<boolean> => access(store.internal).then(() => true, () => false);
    const gone = (): void => {
      if (!storeGone) log.warn({ store: store.root }, 'the store is gone (unmounted?); not following it until it is back');
      storeGone = true;
    };
    if (!(await present())) return gone();
    storeGone = false;
    const lost: string[] = [];
    for (const status of reconciler.list()) {
      const spec = reconciler.spec(status.ref);
      if (!spec || signal.aborted) continue;
      try {
        if (status.state === 'ready' && status.commit) {
          if (!(await store.readRecord(spec.ref, status.commit))) lost.push(status.ref);
        } else if (status.state === 'pending' || status.state === 'failed') {
          const held = await heldRevision(store, spec);
          if (held) reconciler.adopt(spec, held);
        }
      } catch (e) {
        // An unreadable record says nothing about whether the model is there: look again next time.
        log.debug({ ref: status.ref, err: (e as Error).message }, 'cannot read the store; will look again');
      }
    }
    // A record read as missing while the volume went away under the loop is the volume, not a
    // removed model: take losses only when the store is still there after the reads.
    if (lost.length === 0 || signal.aborted) return;
    if (!(await present())) return gone();
    for (const ref of lost) reconciler.lost(ref);
  };
  const syncNow = (): Promise<void> => (running ??= once().finally(() => (running = undefined)));

  // 0 turns the periodic look off (tests whose pulls publish nothing real).
  const timer = o.intervalMs > 0 ? setInterval(() => void syncNow(), o.intervalMs) : undefined;
  timer?.unref();
  const closed = onShutdown(signal, async () => {
    if (timer) clearInterval(timer);
    await running;
  });
  return { closed, syncNow };
}
