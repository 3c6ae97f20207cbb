import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { dirname } from 'node:path';
import { StorageError } from '../core/errors.js';

export function uniqueSuffix(): string {
  return `${process.pid}-${randomBytes(6).toString('hex')}`;
}

/** Write a small file so that readers see either the old or the new content, never a torn one. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await fsp.mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${uniqueSuffix()}`;
  try {
    await fsp.writeFile(tmp, data);
    await fsp.rename(tmp, path);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw storageError(e, path);
  }
}

/** Replace (or create) a symlink atomically. */
export async function symlinkAtomic(target: string, path: string): Promise<void> {
  await fsp.mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${uniqueSuffix()}`;
  await fsp.symlink(target, tmp);
  try {
    await fsp.rename(tmp, path);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
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

/** Turn an fs error into a StorageError (exit 6) that names the path; pass ours through. */
export function storageError(e: unknown, path: string): Error {
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string' && ['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'EIO'].includes(err.code)) {
    const why = err.code === 'ENOSPC' || err.code === 'EDQUOT' ? 'no space left on the store' : err.code === 'EROFS' ? 'read-only filesystem' : 'permission denied';
    return new StorageError(`${why} writing ${path} (${err.code})`, `ESF_${err.code}`, { cause: e });
  }
  return e instanceof Error ? e : new Error(String(e));
}
