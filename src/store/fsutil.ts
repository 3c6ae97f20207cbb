import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { dirname } from 'node:path';
import { StorageError } from '../core/errors.js';

export function uniqueSuffix(): string {
  return `${process.pid}-${randomBytes(6).toString('hex')}`;
}

export interface WriteOptions {
  /**
   * Make the new content survive a power cut before returning: fsync the file, then the folder
   * that names it (and any folder this call created). Default true: records and refs are what
   * readers trust. Caches that are checked when read (git-oid aliases, last-used stamps) pass
   * false and skip the cost.
   */
  durable?: boolean;
}

/**
 * Write a small file so that readers see either the old or the new content, never a torn one
 * (a temp file renamed over it), and, unless told otherwise, still see it after a power cut.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, opts: WriteOptions = {}): Promise<void> {
  const durable = opts.durable ?? true;
  const dir = dirname(path);
  const tmp = `${path}.tmp-${uniqueSuffix()}`;
  try {
    const created = await fsp.mkdir(dir, { recursive: true });
    const fh = await fsp.open(tmp, 'wx');
    try {
      await fh.writeFile(data);
      if (durable) await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, path);
    if (durable) await syncDirs(dir, created);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw storageError(e, path);
  }
}

/** Replace (or create) a symlink atomically, and durably: a revision link is a ref. */
export async function symlinkAtomic(target: string, path: string): Promise<void> {
  const dir = dirname(path);
  const created = await fsp.mkdir(dir, { recursive: true });
  const tmp = `${path}.tmp-${uniqueSuffix()}`;
  await fsp.symlink(target, tmp);
  try {
    await fsp.rename(tmp, path);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await syncDirs(dir, created);
}

/**
 * fsync `dir` (where a name was just added or replaced) and, when `created` (what a recursive
 * mkdir returned) says new folders were made on the way, each of their parents too, up to the
 * folder that already existed: a new name is only durable once every folder on its path is.
 */
async function syncDirs(dir: string, created: string | undefined): Promise<void> {
  const stop = created === undefined ? dir : dirname(created);
  for (let d = dir; ; d = dirname(d)) {
    await syncDir(d);
    if (d === stop || dirname(d) === d) return;
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } catch (e) {
    // Some filesystems cannot fsync a directory (and say so); their metadata is as durable as they make it.
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EBADF') throw e;
  } finally {
    await fh.close();
  }
}

/** Hard-link `src` at `dest` (same content, one copy on disk); fall back to a copy where links are not allowed. */
export async function linkOrCopy(src: string, dest: string): Promise<void> {
  try {
    await fsp.link(src, dest);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code === 'EXDEV' || code === 'EPERM' || code === 'ENOTSUP' || code === 'EMLINK') {
      await fsp.copyFile(src, dest);
      return;
    }
    throw e;
  }
}

export async function readText(path: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await fsp.lstat(path);
    return true;
  } catch {
    return false;
  }
}

const STORAGE_CODES: Record<string, string> = {
  ENOSPC: 'no space left on the store',
  EDQUOT: 'no space left on the store (quota)',
  EROFS: 'read-only filesystem',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EIO: 'I/O error (the disk or the network filesystem failed)',
};

/** Turn an fs error into a StorageError (exit 6) that names the path; pass ours through. */
export function storageError(e: unknown, path: string): Error {
  const err = e as NodeJS.ErrnoException;
  const why = err && typeof err.code === 'string' ? STORAGE_CODES[err.code] : undefined;
  if (why !== undefined) return new StorageError(`${why} writing ${path} (${err.code})`, `ESF_${err.code}`, { cause: e });
  return e instanceof Error ? e : new Error(String(e));
}
