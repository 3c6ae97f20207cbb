import { UnsafePathError, UsageError } from './errors.js';

const MAX_PATH = 4096;
const MAX_COMPONENT = 255;

/**
 * Most files one revision may list (hub, bucket or bundle). Far above any model repo; what it
 * stops is a listing that never ends (a hostile hub, a pagination loop) growing memory without
 * bound. Listings also count their directory entries, against twice this.
 */
export const MAX_LISTING_FILES = 100_000;
export const MAX_LISTING_ENTRIES = 2 * MAX_LISTING_FILES;

/** The refusal for a listing past MAX_LISTING_FILES (exit 2: nothing was written). */
export function listingTooLarge(what: string, limit = MAX_LISTING_FILES, unit = 'files'): UsageError {
  return new UsageError(`${what} lists more than ${limit.toLocaleString('en-US')} ${unit}; refusing a listing this large`, 'ESF_LISTING_TOO_LARGE');
}

/**
 * Validate a repo-relative path from an untrusted listing (hub, bundle, peer). Returns the path
 * unchanged when it is safe to join under a directory we own; throws UnsafePathError otherwise.
 * Rules: POSIX separators only, relative, no empty / "." / ".." components, no NUL or control
 * characters, no backslashes (Windows traversal), bounded length.
 */
export function validateRepoPath(p: unknown): string {
  if (typeof p !== 'string') throw new UnsafePathError(String(p), 'not a string');
  if (p.length === 0) throw new UnsafePathError(p, 'empty path');
  if (p.length > MAX_PATH) throw new UnsafePathError(p.slice(0, 80) + '…', `longer than ${MAX_PATH} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(p)) throw new UnsafePathError(p, 'contains NUL or control characters');
  if (p.includes('\\')) throw new UnsafePathError(p, 'contains a backslash');
  if (p.startsWith('/')) throw new UnsafePathError(p, 'absolute path');
  if (/^[A-Za-z]:/.test(p)) throw new UnsafePathError(p, 'drive-letter path');
  for (const c of p.split('/')) {
    if (c === '') throw new UnsafePathError(p, 'empty path component');
    if (c === '.' || c === '..') throw new UnsafePathError(p, `"${c}" component`);
    if (Buffer.byteLength(c) > MAX_COMPONENT) throw new UnsafePathError(p, `component longer than ${MAX_COMPONENT} bytes`);
  }
  return p;
}

/** Validate a whole listing: every path safe, and no two entries that collide (file vs dir, duplicates). */
export function validateListing(paths: readonly string[]): void {
  if (paths.length > MAX_LISTING_FILES) throw listingTooLarge('the listing');
  const files = new Set<string>();
  for (const p of paths) {
    validateRepoPath(p);
    if (files.has(p)) throw new UnsafePathError(p, 'listed twice');
    files.add(p);
  }
  for (const p of paths) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      if (files.has(prefix)) throw new UnsafePathError(p, `"${prefix}" is listed both as a file and as a directory`);
    }
  }
}
