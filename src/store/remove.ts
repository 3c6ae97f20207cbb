/**
 * Removing a revision from every view, so that readers never see half of it.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { hfEtag } from '../core/manifest.js';
import { repoKey } from '../core/ref.js';
import { ensureDir, exists, readText, storageError, uniqueSuffix } from './fsutil.js';
import type { RepoKeyParts, StoreLayout } from './layout.js';
import { listLeases } from './lease.js';
import { isDamagedRecord, replaceableRecord, repoRecords } from './records.js';

/**
 * Remove one revision from every view and forget its record. Readers never see a half-removed
 * snapshot: refs go first, then each directory is renamed into trash/ before it is deleted.
 * Blobs stay; sweepBlobs() frees those no view links any more.
 */
export async function removeRevision(l: StoreLayout, key: RepoKeyParts, commit: string): Promise<void> {
  // A damaged record is removed too; its HF blob names are then left for a later collection.
  const rec = await replaceableRecord(l, key, commit);
  const trash = join(l.trashDir, uniqueSuffix());
  try {
    await ensureDir(l.root, trash);
  } catch (e) {
    throw storageError(e, l.root);
  }
  const toTrash = async (p: string) => {
    if (await exists(p)) await fsp.rename(p, join(trash, uniqueSuffix()));
  };
  try {
    await removeRefsTo(l.localRefDir(key), commit, true);
    if (key.hub === 'hf') {
      const repo = l.hfRepoDir(key);
      await removeRefsTo(join(repo, 'refs'), commit, false);
      await toTrash(join(repo, 'snapshots', commit));
      // Drop the HF blob names no remaining snapshot of this repo uses, so their link counts
      // fall - unless a pull of this repo is running: it may have linked a name it shares with
      // us before writing its record. A later collection removes what is left.
      // A damaged record of another revision hides which names it needs: then keep them all too.
      const repoBusy = (await listLeases(l.leaseDir)).some((x) => !x.expired && x.name.startsWith(`${repoKey(key)}@`));
      const others = repoBusy ? undefined : await repoRecords(l, key).catch((e: unknown) => {
        if (isDamagedRecord(e)) return undefined;
        throw e;
      });
      if (others) {
        const keep = new Set(others.filter((r) => r.commit !== commit).flatMap((r) => r.files.map((f) => hfEtag(f))));
        for (const f of rec?.files ?? []) {
          const etag = hfEtag(f);
          if (!keep.has(etag)) await fsp.rm(join(repo, 'blobs', etag), { force: true });
        }
      }
    } else if (key.hub === 'ms') {
      const snaps = join(l.msRepoDir(key), 'snapshots');
      for (const name of await fsp.readdir(snaps).catch(() => [] as string[])) {
        const p = join(snaps, name);
        const target = await fsp.readlink(p).catch(() => undefined);
        if (target === commit) await fsp.rm(p, { force: true });
      }
      await toTrash(join(snaps, commit));
    }
    await toTrash(l.plainDir(key, commit));
    await fsp.rm(l.recordPath(key, commit), { force: true });
    await fsp.rm(l.usedPath(key, commit), { force: true });
  } catch (e) {
    throw storageError(e, l.root);
  } finally {
    await fsp.rm(trash, { recursive: true, force: true });
  }
}

/** Delete the ref files under `dir` that name `commit` (`encoded`: one flat folder of encoded names). */
async function removeRefsTo(dir: string, commit: string, encoded: boolean): Promise<void> {
  const walk = async (d: string): Promise<void> => {
    for (const ent of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, ent.name);
      if (ent.isDirectory() && !encoded) await walk(p);
      else if (ent.isFile() && (await readText(p))?.trim() === commit) await fsp.rm(p, { force: true });
    }
  };
  await walk(dir);
}
