import { randomBytes } from 'node:crypto';
import { promises as fsp, type Stats } from 'node:fs';
import { dirname, isAbsolute, join, relative, sep } from 'node:path';
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
  /**
   * The store root the file lives under: every folder between it and the file must be a real
   * directory (see ensureDir). Without it, folders are made with a plain mkdir -p.
   */
  within?: string;
}

/** lstat that answers undefined for a missing path. */
export async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await fsp.lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

export function foreignLink(path: string): StorageError {
  return new StorageError(
    `refusing to follow ${path}: it is a symbolic link the store did not make, and writing through it could land outside the store; remove it`,
    'ESF_FOREIGN_LINK',
  );
}

/**
 * mkdir -p for a folder inside the store that never follows a symbolic link below `root`: the
 * store makes no links on folder paths, so one there was planted, and following it would write
 * outside the store. (The root itself may be a link: that is where the user put the store.)
 * Returns the first folder it created, like mkdir -p.
 */
export async function ensureDir(root: string, dir: string): Promise<string | undefined> {
  const rel = relative(root, dir);
  if (rel.startsWith('..') || isAbsolute(rel)) throw new Error(`internal error: ${dir} is not inside the store ${root}`);
  let created = await fsp.mkdir(root, { recursive: true });
  let cur = root;
  for (const part of rel === '' ? [] : rel.split(sep)) {
    cur = join(cur, part);
    let st = await lstatOrUndefined(cur);
    if (st === undefined) {
      try {
        await fsp.mkdir(cur);
        created ??= cur;
        continue;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        st = await fsp.lstat(cur);
      }
    }
    if (st.isSymbolicLink()) throw foreignLink(cur);
    if (!st.isDirectory()) throw new StorageError(`${cur} is in the way: the store needs a folder there`, 'ESF_NOT_A_FOLDER');
  }
  return created;
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
    const created = opts.within === undefined ? await fsp.mkdir(dir, { recursive: true }) : await ensureDir(opts.within, dir);
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

/** Whether every folder below `root` down to `dir` exists as a real directory (no link on the way). */
export async function isRealDirBelow(root: string, dir: string): Promise<boolean> {
  for (let cur = dir; cur !== root && cur.startsWith(root); cur = dirname(cur)) {
    const st = await lstatOrUndefined(cur);
    if (!st?.isDirectory()) return false;
  }
  return true;
}

/** Replace (or create) a symlink atomically, and durably: a revision link is a ref. `within`: as for writeFileAtomic. */
export async function symlinkAtomic(target: string, path: string, within?: string): Promise<void> {
  const dir = dirname(path);
  const created = within === undefined ? await fsp.mkdir(dir, { recursive: true }) : await ensureDir(within, dir);
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

/**
 * Hard-link `src` at a new name `dest`; false (and nothing made) where the filesystem refuses a
 * link: another filesystem, links not allowed, or `src` at its link limit.
 */
export async function tryLink(src: string, dest: string): Promise<boolean> {
  try {
    await fsp.link(src, dest);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EXDEV' || code === 'EPERM' || code === 'ENOTSUP' || code === 'EMLINK') return false;
    throw e;
  }
}

/** Hard-link `src` at a new name `dest` (same content, one copy on disk); a copy where links are refused. */
export async function linkOrCopy(src: string, dest: string): Promise<void> {
  if (!(await tryLink(src, dest))) await fsp.copyFile(src, dest);
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
