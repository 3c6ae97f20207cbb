/**
 * The store sync's one judgement: a record that is gone means the model was removed, but a store
 * that is gone means the volume was (unmounted, replaced). The race between the two, a volume
 * that goes away while the sync is reading records, used to be taken for removed models and
 * pulled them all again into the empty mount point.
 */
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { parseRef } from '../../src/core/ref.js';
import type { ModelSpec } from '../../src/daemon/config.js';
import type { ModelStatus, Reconciler } from '../../src/daemon/reconciler.js';
import { startStoreSync } from '../../src/daemon/store-sync.js';
import { Store } from '../../src/store/store.js';
import { tmpDir } from '../support/tmp.js';

const log = pino({ level: 'silent' });
const COMMIT = 'a'.repeat(40);

/** A reconciler that tracks one ready model and records what the sync tells it. */
function oneReadyModel(): { reconciler: Reconciler; lost: string[] } {
  const ref = parseRef('hf://org/alpha@main', {});
  const spec: ModelSpec = { ref, key: 'hf://org/alpha@main' };
  const status = { ref: spec.key, commit: COMMIT, state: 'ready' } as ModelStatus;
  const lost: string[] = [];
  const reconciler = {
    list: () => [status],
    spec: (key: string) => (key === spec.key ? spec : undefined),
    lost: (key: string) => void lost.push(key),
    adopt: () => {
      throw new Error('nothing to adopt here');
    },
  } as unknown as Reconciler;
  return { reconciler, lost };
}

async function syncOnce(store: Store, reconciler: Reconciler): Promise<void> {
  const ac = new AbortController();
  const sync = startStoreSync({ store, reconciler, intervalMs: 0, logger: log, signal: ac.signal });
  await sync.syncNow();
  ac.abort();
  await sync.closed;
}

describe('store sync', () => {
  it('a record that is gone from a store that is there is a removed model', async () => {
    const dir = await tmpDir();
    const store = new Store(join(dir, 'store'));
    await store.init();
    const { reconciler, lost } = oneReadyModel();
    await syncOnce(store, reconciler);
    expect(lost).toEqual(['hf://org/alpha@main']);
  });

  it('a store that goes away while its records are read is a volume gone, not models removed', async () => {
    const dir = await tmpDir();
    const store = new Store(join(dir, 'store'));
    await store.init();
    // The volume goes away between the sync's look at the store and its read of the record.
    const readRecord = store.readRecord.bind(store);
    store.readRecord = async (key, commit) => {
      await rename(join(dir, 'store'), join(dir, 'store-away'));
      return readRecord(key, commit);
    };
    const { reconciler, lost } = oneReadyModel();
    await syncOnce(store, reconciler);
    expect(lost).toEqual([]);
    // Once it is back (still without the record), the loss is real and is taken.
    await rename(join(dir, 'store-away'), join(dir, 'store'));
    store.readRecord = readRecord;
    await syncOnce(store, reconciler);
    expect(lost).toEqual(['hf://org/alpha@main']);
  });

  it('a store that is not there at all is left alone', async () => {
    const dir = await tmpDir();
    await mkdir(join(dir, 'empty-mount-point'));
    const store = new Store(join(dir, 'empty-mount-point', 'store'));
    const { reconciler, lost } = oneReadyModel();
    await syncOnce(store, reconciler);
    expect(lost).toEqual([]);
  });
});
