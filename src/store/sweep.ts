/**
 * Freeing blobs nothing needs any more, and measuring what the blob store holds.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { hasBlob, listBlobs } from './blobs.js';
import { isRealDirBelow, readText, storageError } from './fsutil.js';
import type { StoreLayout } from './layout.js';
import { listRecords } from './records.js';

/** Blobs younger than this are never swept: a publish may be about to link them. */
export const DEFAULT_SWEEP_GRACE_MS = 10 * 60_000;

/**
 * Delete blobs that nothing needs any more: no publish record lists them and no view links them
 * (link count 1: only the blob store's own name). A blob younger than the grace period is spared
 * unless the caller names it in `immediate` (blobs of revisions it has just removed): a pull or
 * an import may have committed it and be about to link it.
 */
export async function sweepBlobs(l: StoreLayout, opts: { graceMs?: number; immediate?: Iterable<string> } = {}): Promise<{ freedBytes: number; freedBlobs: number }> {
  const grace = opts.graceMs ?? DEFAULT_SWEEP_GRACE_MS;
  const immediate = new Set(opts.immediate ?? []);
  let freedBytes = 0;
  let freedBlobs = 0;
  try {
    // Records count even where a view holds a copy instead of a link (no hard links allowed).
    const referenced = new Set((await listRecords(l)).flatMap((r) => r.files.map((f) => f.sha256)));
    for await (const { name, path: p } of listBlobs(l)) {
      if (referenced.has(name)) continue;
      const st = await fsp.stat(p).catch(() => undefined);
      if (!st || st.nlink > 1) continue;
      if (!immediate.has(name) && Date.now() - st.mtimeMs < grace) continue;
      await fsp.rm(p, { force: true });
      freedBytes += st.size;
      freedBlobs++;
    }
    // Aliases (git oid -> sha256) whose blob is gone are stale. (Never through a planted link.)
    const aliases = (await isRealDirBelow(l.root, l.aliasDir)) ? await fsp.readdir(l.aliasDir, { withFileTypes: true }).catch(() => []) : [];
    for (const a of aliases) {
      if (!a.isFile()) continue;
      const sha = (await readText(join(l.aliasDir, a.name)))?.trim();
      if (!sha || !(await hasBlob(l, sha))) await fsp.rm(join(l.aliasDir, a.name), { force: true });
    }
  } catch (e) {
    throw storageError(e, l.root);
  }
  return { freedBytes, freedBlobs };
}

/** Bytes in the blob store, and free bytes on its filesystem (0 when unknown). */
export async function usage(l: StoreLayout): Promise<{ usedBytes: number; freeBytes: number }> {
  let usedBytes = 0;
  for await (const { path: p } of listBlobs(l)) {
    const st = await fsp.stat(p).catch(() => undefined);
    if (st) usedBytes += st.size;
  }
  let freeBytes = 0;
  try {
    const s = await fsp.statfs(l.root);
    freeBytes = Number(s.bavail) * Number(s.bsize);
  } catch {
    freeBytes = 0;
  }
  return { usedBytes, freeBytes };
}
