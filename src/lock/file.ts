/** Reading and writing lock files: bounded, validated reads; atomic writes. */
import { promises as fsp } from 'node:fs';
import { resolve } from 'node:path';
import { NotFoundError } from '../core/errors.js';
import { sha256Hex } from '../core/integrity.js';
import { writeFileAtomic } from '../store/fsutil.js';
import { badLock, formatLock, MAX_LOCK_BYTES, parseLock, type Lock } from './format.js';

/** A lock as read: its content, where it is, and the SHA-256 of its bytes (what provenance names). */
export interface LoadedLock {
  lock: Lock;
  /** Absolute path. */
  file: string;
  sha256: string;
}

/** Read and validate a lock file: missing is "not found" (3), anything unreadable or invalid is bad input (2). */
export async function readLockFile(path: string): Promise<LoadedLock> {
  const file = resolve(path);
  let text: Buffer;
  try {
    const st = await fsp.stat(file);
    if (!st.isFile()) throw badLock(path, 'not a regular file');
    if (st.size > MAX_LOCK_BYTES) throw badLock(path, `larger than ${MAX_LOCK_BYTES} bytes`);
    text = await fsp.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new NotFoundError(`lock file ${path} does not exist (write one with: swift-fetch lock REF... -o ${path})`, 'ESF_NO_LOCK');
    if (code) throw badLock(path, `cannot read it (${code})`);
    throw e;
  }
  return { lock: parseLock(text.toString('utf8'), path), file, sha256: sha256Hex(text) };
}

/** Write a lock atomically (a reader never sees half of one); returns its text. */
export async function writeLockFile(path: string, lock: Lock): Promise<string> {
  const text = formatLock(lock);
  await writeFileAtomic(resolve(path), text);
  return text;
}
