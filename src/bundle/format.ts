/**
 * The offline bundle format: one standard (ustar) tar file.
 *
 *   swift-fetch-bundle.json        the manifest, always the first entry
 *   blobs/sha256/<64 hex>          each distinct content once, in the manifest's `blobs` order
 *
 * Entry names are never used as paths on the importing side: the importer only ever writes files
 * it names itself (staging files under the store's partial dir), and the views are built from the
 * manifest's file lists after every byte was hashed. The manifest is bounded in size, so an
 * importer's memory does not grow with the bundle.
 */
import { z } from 'zod';
import { IntegrityError, UsageError } from '../core/errors.js';
import { validateListing } from '../core/paths.js';
import { isCommitId, parseRef, type Hub } from '../core/ref.js';
import { recordFileShape } from '../store/records.js';
import type { RecordFile } from '../store/store.js';

export const MANIFEST_NAME = 'swift-fetch-bundle.json';
export const BUNDLE_FORMAT = 'swift-fetch-bundle';
export const BUNDLE_VERSION = 1;
/** A manifest larger than this is refused: 64 MiB holds several hundred thousand file entries. */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

export const BLOB_PREFIX = 'blobs/sha256/';
const BLOB_NAME = /^blobs\/sha256\/([0-9a-f]{64})$/;

/** A file of a bundled revision: exactly what the store's publish record holds for it. */
export type BundleFile = RecordFile;

export interface BundleModel {
  hub: Hub;
  org: string;
  name: string;
  /** The revision asked for when the bundle was made (a branch, a tag or the commit). */
  revision: string;
  /** Every branch/tag name that pointed at `commit` in the source store; each becomes a local ref. */
  revisions: string[];
  commit: string;
  /** True when the files are the whole revision (not narrowed by --include/--exclude). */
  complete: boolean;
  files: BundleFile[];
}

export interface BundleBlob {
  sha256: string;
  size: number;
}

export interface BundleManifest {
  format: typeof BUNDLE_FORMAT;
  version: typeof BUNDLE_VERSION;
  created: string;
  tool: { name: string; version: string };
  models: BundleModel[];
  blobs: BundleBlob[];
}

const hex = (n: number) => z.string().regex(new RegExp(`^[0-9a-f]{${n}}$`), `expected ${n} lowercase hex digits`);
const size = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

// A bundled file is exactly a record's file; a bundle is stricter in refusing unknown keys. A
// missing digest is checked after the shape (requireDigests), so that it is an integrity failure
// (exit 5) like a wrong one, not a malformed manifest (exit 2).
const fileSchema = z.strictObject({ ...recordFileShape, sha256: recordFileShape.sha256.optional() });

const modelSchema = z.strictObject({
  hub: z.enum(['hf', 'ms']),
  org: z.string(),
  name: z.string(),
  revision: z.string(),
  revisions: z.array(z.string()),
  commit: hex(40),
  complete: z.boolean(),
  files: z.array(fileSchema).min(1, 'a model with no files'),
});

const manifestSchema = z.strictObject({
  format: z.literal(BUNDLE_FORMAT),
  version: z.literal(BUNDLE_VERSION),
  created: z.string(),
  tool: z.strictObject({ name: z.string(), version: z.string() }),
  models: z.array(modelSchema).min(1, 'a bundle with no models'),
  blobs: z.array(z.strictObject({ sha256: hex(64).optional(), size })),
});

export function blobEntryName(sha256: string): string {
  return `${BLOB_PREFIX}${sha256}`;
}

/** The SHA-256 a blob entry name carries, or undefined when the name is not a blob entry. */
export function blobOfEntry(name: string): string | undefined {
  return BLOB_NAME.exec(name)?.[1];
}

function bad(why: string): UsageError {
  return new UsageError(`not a valid swift-fetch bundle manifest: ${why}`, 'ESF_BAD_BUNDLE');
}

function unanchored(why: string, path?: string): IntegrityError {
  return new IntegrityError(`bundle manifest: ${why}`, { expected: 'a digest for every file', found: 'none', ...(path ? { path } : {}) });
}

/**
 * The digest a hub vouches for, per file, is what makes a bundled file checkable: its SHA-256
 * always, and for a Hugging Face file kept in git (not LFS) also its git blob id, the only hash the
 * Hub lists for it. A bundle whose `config.json` was swapped for same-size bytes and whose git id
 * was left out would otherwise land with a SHA-256 that only its author vouches for (issue 12.4).
 * Returns why `f` falls short, or undefined.
 */
export function missingDigest(hub: Hub, f: { sha256?: string | undefined; gitOid?: string | undefined; lfs: boolean }): string | undefined {
  if (!f.sha256) return 'no SHA-256';
  if (hub === 'hf' && !f.lfs && !f.gitOid) return 'no git blob id (the only hash Hugging Face lists for a file kept in git)';
  return undefined;
}

/**
 * Parse and check a manifest completely before any byte of content is accepted: its shape, every
 * ref part and file path (the same rules as a hub listing), and that the blob list and the file
 * lists agree (every file's content listed once, with one size; no content nobody uses).
 */
export function parseManifest(text: string): BundleManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw bad(`not JSON (${(e as Error).message})`);
  }
  const r = manifestSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw bad(`${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const m = requireDigests(r.data);
  const blobSizes = new Map<string, number>();
  for (const b of m.blobs) {
    if (blobSizes.has(b.sha256)) throw bad(`blob ${b.sha256} listed twice`);
    blobSizes.set(b.sha256, b.size);
  }
  const used = new Set<string>();
  const seenModels = new Set<string>();
  // Same content must have the same git blob id wherever it appears as a regular (non-LFS) file.
  const gitOfSha = new Map<string, string>();
  for (const model of m.models) {
    const label = `${model.hub}://${model.org}/${model.name}@${model.commit}`;
    // parseRef owns the rules for names and revisions; reuse them rather than restating them.
    parseRef(`${model.hub}://${model.org}/${model.name}@${model.revision}`);
    for (const rev of model.revisions) {
      parseRef(`${model.hub}://${model.org}/${model.name}@${rev}`);
      if (isCommitId(rev)) throw bad(`${label}: revisions lists a commit id (${rev}); only branch and tag names belong there`);
    }
    if (seenModels.has(label)) throw bad(`${label} listed twice`);
    seenModels.add(label);
    validateListing(model.files.map((f) => f.path));
    for (const f of model.files) {
      const blobSize = blobSizes.get(f.sha256);
      if (blobSize === undefined) throw bad(`${label}: ${f.path}: content ${f.sha256} is not in the blob list`);
      if (blobSize !== f.size) throw bad(`${label}: ${f.path}: size ${f.size} but its blob is listed with ${blobSize} bytes`);
      used.add(f.sha256);
      if (f.gitOid && !f.lfs) {
        const prev = gitOfSha.get(f.sha256);
        if (prev && prev !== f.gitOid) throw unanchored(`${label}: ${f.path}: content ${f.sha256} listed with two different git blob ids`, f.path);
        gitOfSha.set(f.sha256, f.gitOid);
      }
    }
  }
  for (const sha of blobSizes.keys()) {
    if (!used.has(sha)) throw bad(`blob ${sha} is used by no file`);
  }
  return m;
}

/** Every blob and file of a shape-checked manifest carries its digests (IntegrityError, exit 5, otherwise). */
function requireDigests(m: z.infer<typeof manifestSchema>): BundleManifest {
  m.blobs.forEach((b, i) => {
    if (!b.sha256) throw unanchored(`blobs.${i} has no SHA-256`);
  });
  for (const model of m.models) {
    for (const f of model.files) {
      const why = missingDigest(model.hub, f);
      if (why) throw unanchored(`${model.hub}://${model.org}/${model.name}@${model.commit}: ${JSON.stringify(f.path)} has ${why}`, f.path);
    }
  }
  return m as BundleManifest;
}

/** The git blob id the content of `sha256` must have (from a non-LFS file that lists one), if any. */
export function gitOidsBySha(m: BundleManifest): Map<string, string> {
  const out = new Map<string, string>();
  for (const model of m.models) {
    for (const f of model.files) if (f.gitOid && !f.lfs) out.set(f.sha256, f.gitOid);
  }
  return out;
}

export function modelLabel(model: Pick<BundleModel, 'hub' | 'org' | 'name' | 'revision'>): string {
  return `${model.hub}://${model.org}/${model.name}@${model.revision}`;
}
