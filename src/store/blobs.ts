/**
 * The content store: verified blobs named by their SHA-256, read-only, linked into the views.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { ensureDir, exists, isRealDirBelow, readText, storageError, writeFileAtomic } from './fsutil.js';
import type { StoreLayout } from './layout.js';

/** Create the store's internal folders (the views appear with their first publish). */
export async function initStore(l: StoreLayout): Promise<void> {
  try {
    for (const d of [l.partialDir, l.tmpDir, l.leaseDir, l.blobsDir]) await ensureDir(l.root, d);
  } catch (e) {
    throw storageError(e, l.root);
  }
}

export function hasBlob(l: StoreLayout, sha256: string): Promise<boolean> {
  return exists(l.blobPath(sha256));
}

/** SHA-256 of a blob known only by its git oid (HF small files), if we stored one before. */
export async function shaForGitOid(l: StoreLayout, oid: string): Promise<string | undefined> {
  const sha = (await readText(join(l.aliasDir, oid)))?.trim();
  if (sha && /^[0-9a-f]{64}$/.test(sha) && (await hasBlob(l, sha))) return sha;
  return undefined;
}

/**
 * Move a verified file into the blob store. Linking (not renaming) makes "already there" an
 * atomic no-op: the existing inode keeps every view that links it.
 */
export async function commitBlob(l: StoreLayout, tmpPath: string, sha256: string, gitOid?: string): Promise<string> {
  const dest = l.blobPath(sha256);
  try {
    await ensureDir(l.root, join(dest, '..'));
    await fsp.chmod(tmpPath, 0o444);
    try {
      await fsp.link(tmpPath, dest);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') {
        await freshen(dest);
      } else if (code === 'EXDEV' || code === 'EPERM' || code === 'ENOTSUP') {
        await fsp.rename(tmpPath, dest);
      } else {
        throw e;
      }
    }
    await fsp.rm(tmpPath, { force: true });
    // An alias is a cache checked when read (shaForGitOid): no fsync needed.
    if (gitOid) await writeFileAtomic(join(l.aliasDir, gitOid), sha256, { durable: false, within: l.root });
  } catch (e) {
    throw storageError(e, dest);
  }
  return dest;
}

/** Mark a blob as just used, so a concurrent sweep's grace period protects it until it is linked. */
export async function freshen(blob: string): Promise<void> {
  const now = new Date();
  await fsp.utimes(blob, now, now).catch(() => undefined);
}

/**
 * Every blob in the blob store: its name (the SHA-256) and path. Only real folders and regular
 * files count: a link planted there is not a blob, and a sweep must never delete through one.
 */
export async function* listBlobs(l: StoreLayout): AsyncGenerator<{ name: string; path: string }> {
  if (!(await isRealDirBelow(l.root, l.blobsDir))) return;
  for (const fan of await fsp.readdir(l.blobsDir, { withFileTypes: true }).catch(() => [])) {
    if (!fan.isDirectory()) continue;
    for (const blob of await fsp.readdir(join(l.blobsDir, fan.name), { withFileTypes: true }).catch(() => [])) {
      if (blob.isFile()) yield { name: blob.name, path: join(l.blobsDir, fan.name, blob.name) };
    }
  }
}
