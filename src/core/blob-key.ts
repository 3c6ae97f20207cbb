import { sha256Hex } from './integrity.js';

/**
 * What identifies a blob across runs, processes and nodes: its SHA-256 when the hub gives one,
 * else its git blob id (small HF files), else its place in a commit (a file the hub gives no hash
 * for: fetched, never deduplicated). Built once, where a listing becomes blob requests, and carried
 * as this value; nothing parses it back from a string.
 *
 * Written out it is `sha256:<hex>`, `git:<oid>` or `path:<commit>:<path>`: the keys of the resume
 * database, and (through blobFileStem) partial-file and lease names. Those forms are on disk in
 * existing stores and state dirs, so they must not change.
 */
export type BlobKey =
  | { readonly kind: 'sha256'; readonly sha256: string }
  | { readonly kind: 'git'; readonly gitOid: string }
  | { readonly kind: 'path'; readonly commit: string; readonly path: string };

/** The key of a listed file: by content when the hub gives a hash, else by its place in `commit`. */
export function blobKeyOf(f: { path: string; sha256?: string; gitOid?: string }, commit: string): BlobKey {
  if (f.sha256) return { kind: 'sha256', sha256: f.sha256 };
  if (f.gitOid) return { kind: 'git', gitOid: f.gitOid };
  return { kind: 'path', commit, path: f.path };
}

export function sha256Key(sha256: string): BlobKey {
  return { kind: 'sha256', sha256 };
}

/** The written form (see above): stable, so resume state survives upgrades. */
export function formatBlobKey(k: BlobKey): string {
  switch (k.kind) {
    case 'sha256':
      return `sha256:${k.sha256}`;
    case 'git':
      return `git:${k.gitOid}`;
    case 'path':
      return `path:${k.commit}:${k.path}`;
  }
}

/** The SHA-256 a key names, if it names a well-formed one (peers serve blobs by SHA-256 only). */
export function sha256OfKey(k: BlobKey): string | undefined {
  return k.kind === 'sha256' && /^[0-9a-f]{64}$/.test(k.sha256) ? k.sha256 : undefined;
}

/**
 * A name safe as one path component: `sha256-<hex>`, `git-<oid>`, or `key-<sha256 of the written
 * key>` for path keys and anything that is not plain hex (a digest from an untrusted listing must
 * never steer a file name).
 */
export function blobFileStem(k: BlobKey): string {
  const hex = k.kind === 'sha256' ? k.sha256 : k.kind === 'git' ? k.gitOid : undefined;
  if (hex !== undefined && /^[0-9a-f]{8,128}$/.test(hex)) return `${k.kind}-${hex}`;
  return `key-${sha256Hex(formatBlobKey(k))}`;
}
