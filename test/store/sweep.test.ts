import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/core/integrity.js';
import { Store } from '../../src/store/store.js';
import { tmpDir } from '../support/index.js';

async function storeWithBlob(content: string) {
  const root = await tmpDir();
  const store = new Store(join(root, 'store'));
  await store.init();
  const tmp = join(store.partialDir, 'x');
  await fsp.writeFile(tmp, content);
  const sha = sha256Hex(content);
  await store.commitBlob(tmp, sha);
  return { store, sha };
}

describe('sweepBlobs', () => {
  it('spares a blob just committed and not yet published (an import or pull is about to link it)', async () => {
    const { store, sha } = await storeWithBlob('fresh content');
    expect(await store.sweepBlobs()).toEqual({ freedBytes: 0, freedBlobs: 0 });
    expect(await store.hasBlob(sha)).toBe(true);
    // Named as the blob of a revision the caller just removed, it goes at once.
    expect((await store.sweepBlobs({ immediate: [sha] })).freedBlobs).toBe(1);
    expect(await store.hasBlob(sha)).toBe(false);
  });

  it('never frees a blob a publish record lists, even where the views hold copies instead of links', async () => {
    const { store, sha } = await storeWithBlob('{"a":1}');
    const rec = await store.publish({
      key: { hub: 'ms', org: 'o', name: 'n' },
      commit: 'a'.repeat(40),
      revision: 'master',
      files: [{ path: 'config.json', size: 7, lfs: false, sha256: sha, verified: true }],
      complete: true,
    });
    // A filesystem without hard links (or protected_hardlinks across uids): the views copied.
    for (const p of [join(rec.paths.plain, 'config.json'), join(rec.paths.ms!, 'config.json')]) {
      await fsp.rm(p);
      await fsp.writeFile(p, '{"a":1}');
    }
    expect((await fsp.stat(store.blobPath(sha))).nlink).toBe(1);
    expect((await store.sweepBlobs({ graceMs: 0, immediate: [sha] })).freedBlobs).toBe(0);
    expect(await store.hasBlob(sha)).toBe(true);
  });
});
