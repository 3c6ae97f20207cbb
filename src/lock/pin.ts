/**
 * A lock entry against what a hub lists, and against what a store recorded: pure comparisons, no
 * I/O. A revision is immutable, so at the locked commit every difference is a hub (or a lock, or a
 * store) that is not telling the truth: the callers make each one an integrity failure.
 */
import { IntegrityError } from '../core/errors.js';
import type { FileEntry, Manifest } from '../core/manifest.js';
import { selectFiles } from '../core/select.js';
import type { LockedFile, LockedModel } from './format.js';

/** One way a listing (or a store) disagrees with the lock, naming the file where there is one. */
export interface LockDifference {
  path?: string;
  what: 'commit' | 'missing' | 'size' | 'sha256' | 'git';
  expected: string;
  found: string;
}

/**
 * How the hub's listing of the locked commit differs from the lock: a file the lock names and the
 * listing lacks, or one whose size or hash (where the hub gives it) is not the locked one. Files
 * the hub lists beyond the lock's selection are not differences (a lock may hold a selection).
 */
export function listingDifferences(pin: LockedModel, listing: Manifest): LockDifference[] {
  if (listing.commit !== pin.commit) return [{ what: 'commit', expected: pin.commit, found: listing.commit }];
  const listed = new Map(listing.files.map((f) => [f.path, f]));
  const out: LockDifference[] = [];
  for (const f of pin.files) {
    const h = listed.get(f.path);
    if (!h) out.push({ path: f.path, what: 'missing', expected: `${f.size} bytes`, found: 'not listed' });
    else if (h.size !== f.size) out.push({ path: f.path, what: 'size', expected: `${f.size} bytes`, found: `${h.size} bytes` });
    else if (h.sha256 && h.sha256 !== f.sha256) out.push({ path: f.path, what: 'sha256', expected: `sha256:${f.sha256}`, found: `sha256:${h.sha256}` });
    else if (h.gitOid && f.gitOid && h.gitOid !== f.gitOid) out.push({ path: f.path, what: 'git', expected: `git:${f.gitOid}`, found: `git:${h.gitOid}` });
  }
  return out;
}

/** What a store's record holds of a pinned revision that is not exactly the locked content. */
export function recordDifferences(files: readonly LockedFile[], recorded: ReadonlyArray<{ path: string; size: number; sha256: string }>): LockDifference[] {
  const have = new Map(recorded.map((f) => [f.path, f]));
  const out: LockDifference[] = [];
  for (const f of files) {
    const h = have.get(f.path);
    if (!h) out.push({ path: f.path, what: 'missing', expected: `sha256:${f.sha256}`, found: 'not in the store' });
    else if (h.size !== f.size || h.sha256 !== f.sha256) out.push({ path: f.path, what: 'sha256', expected: `sha256:${f.sha256} (${f.size} bytes)`, found: `sha256:${h.sha256} (${h.size} bytes)` });
  }
  return out;
}

/** One line for a difference: "config.json: sha256:ab… in the lock, sha256:cd… at the hub". */
export function describeDifference(d: LockDifference, where: string): string {
  if (d.what === 'commit') return `commit ${d.found} ${where}, ${d.expected} in the lock`;
  return `${d.path}: ${d.expected} in the lock, ${d.found} ${where}`;
}

/** Exit 5 for the first difference, the message naming the model, the file and the lock. */
export function differenceError(pin: LockedModel, lockFile: string, d: LockDifference, where: string): IntegrityError {
  return new IntegrityError(`${pin.ref} (${pin.commit.slice(0, 12)}) differs from the lock ${lockFile}: ${describeDifference(d, where)}`, {
    expected: d.expected,
    found: d.found,
    ...(d.path !== undefined ? { path: d.path } : {}),
  });
}

/**
 * The files a pinned pull gets: the lock's (narrowed by the pull's own --include/--exclude), each
 * expected to hash to the lock's SHA-256 - so the transfer engine, peers and the store check every
 * byte against the lock, not only against what the hub says today. Throws on the first way the
 * hub's listing of the locked commit disagrees with the lock.
 */
export function pinnedFiles(pin: LockedModel, listing: Manifest, lockFile: string, include?: readonly string[], exclude?: readonly string[]): FileEntry[] {
  const diff = listingDifferences(pin, listing);
  if (diff.length > 0) throw differenceError(pin, lockFile, diff[0]!, 'at the hub');
  const listed = new Map(listing.files.map((f) => [f.path, f]));
  const locked: FileEntry[] = pin.files.map((f) => {
    const h = listed.get(f.path)!;
    const e: FileEntry = { path: f.path, size: f.size, sha256: f.sha256, lfs: h.lfs };
    const gitOid = h.gitOid ?? f.gitOid;
    if (gitOid) e.gitOid = gitOid;
    return e;
  });
  return selectFiles(locked, include, exclude);
}
