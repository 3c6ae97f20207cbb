/**
 * The manifest `push` writes next to the objects it uploaded: the SHA-256 of every file, so a later
 * pull from the bucket verifies each byte even where the provider keeps no whole-object SHA-256
 * (multipart objects, providers without checksums). It is written last: its presence means the
 * push finished. Pure: no I/O here.
 */
import { UsageError } from '../core/errors.js';
import { validateListing } from '../core/paths.js';
import { createHash } from 'node:crypto';

/** Object name under the prefix. Hidden, so a plain `aws s3 cp --recursive` copy of the model stays clean. */
export const MANIFEST_NAME = '.swift-fetch-manifest.json';
const FORMAT = 'swift-fetch/s3-manifest';

export interface BucketManifestFile {
  path: string;
  size: number;
  /** Hex SHA-256 of the content. */
  sha256: string;
  /** The object's ETag right after the push (unquoted): a different one means the object was rewritten since. */
  etag: string;
  gitOid?: string;
}

export interface BucketManifest {
  format: typeof FORMAT;
  version: 1;
  /** The model this is a copy of, pinned: `hf://ORG/NAME@<commit>`. */
  source: string;
  commit: string;
  files: BucketManifestFile[];
  createdAt: string;
}

export function buildManifest(source: string, commit: string, files: BucketManifestFile[], now = new Date()): BucketManifest {
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { format: FORMAT, version: 1, source, commit, files: sorted, createdAt: now.toISOString() };
}

/** Parse and validate a manifest read from a bucket (untrusted input: every path is checked). */
export function parseManifest(text: string, where: string): BucketManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new UsageError(`${where}: the manifest is not JSON`, 'ESF_S3_BAD_MANIFEST');
  }
  const m = doc as Partial<BucketManifest> | null;
  if (!m || m.format !== FORMAT || m.version !== 1 || !Array.isArray(m.files) || typeof m.commit !== 'string' || typeof m.source !== 'string') {
    throw new UsageError(`${where}: not a swift-fetch manifest (format ${FORMAT}, version 1)`, 'ESF_S3_BAD_MANIFEST');
  }
  for (const f of m.files) {
    if (typeof f?.path !== 'string' || !Number.isSafeInteger(f.size) || f.size < 0 || typeof f.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(f.sha256) || typeof f.etag !== 'string') {
      throw new UsageError(`${where}: a manifest entry without a valid path, size, sha256 or etag`, 'ESF_S3_BAD_MANIFEST');
    }
    if (f.gitOid !== undefined && !/^[0-9a-f]{40}$/.test(f.gitOid)) throw new UsageError(`${where}: bad gitOid for ${JSON.stringify(f.path)}`, 'ESF_S3_BAD_MANIFEST');
  }
  validateListing(m.files.map((f) => f.path));
  return m as BucketManifest;
}

/**
 * The revision id of a listing: keys (relative to the prefix), sizes and ETags, so any rewritten,
 * added or removed object makes a new revision. 40 hex digits, like a commit id, so the store's
 * revision handling applies unchanged.
 */
export function listingRevision(objects: ReadonlyArray<{ path: string; size: number; etag: string }>): string {
  const h = createHash('sha256');
  const sorted = [...objects].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const o of sorted) h.update(`${o.path}\0${o.size}\0${o.etag}\n`);
  return h.digest('hex').slice(0, 40);
}

export function hexToBase64(hex: string): string {
  return Buffer.from(hex, 'hex').toString('base64');
}

export function base64ToHex(b64: string): string {
  return Buffer.from(b64, 'base64').toString('hex');
}
