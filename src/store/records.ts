/**
 * Records and refs: what a publish verified (one JSON file per revision) and which commit a
 * revision name pointed at, so that `path`, `ls`, `verify`, GC and offline pulls answer from the
 * store alone.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { NotFoundError, StorageError, isSwiftFetchError } from '../core/errors.js';
import { validateListing } from '../core/paths.js';
import { isCommitId, isSafeRepo, repoKey, type Hub } from '../core/ref.js';
import { readText, writeFileAtomic } from './fsutil.js';
import type { RepoKeyParts, StoreLayout, ViewPaths } from './layout.js';

/** The record format this code writes and reads; a record of another version is refused, not guessed at. */
export const RECORD_VERSION = 1;

export interface RecordFile {
  path: string;
  size: number;
  sha256: string;
  gitOid?: string;
  lfs: boolean;
  /** False only for files the hub gave no hash for (ModelScope without Sha256): stored, but unverified. */
  verified: boolean;
  /** Where the content came from; absent in records written before provenance was kept. */
  from?: FileProvenance;
}

/**
 * Where one published file came from, for audits (`swift-fetch inspect`): how its bytes reached
 * this store, which listing vouched for them, when, and what they were checked against.
 */
export interface FileProvenance {
  /** download: fetched by this publish; store: the content was already held; bundle: imported. */
  via: 'download' | 'store' | 'bundle';
  hub: Hub;
  commit: string;
  /** When it was published (ISO time). */
  at: string;
  /** The hub's base URL (no credentials) when the listing came from a hub. */
  endpoint?: string;
  /** Bytes this publish moved for it, by where they came from (via download). */
  bytes?: { origin: number; peer: number; replica: number };
  /** The lock file it was checked against: its path when used, and the SHA-256 of its bytes. */
  lock?: { file: string; sha256: string };
  /** The bundle it was imported from, and the key id that signed it (when signed). */
  bundle?: { file: string; signedBy?: string };
}

/** What a completed publish leaves behind: the verified file list of one revision, and where its views are. */
export interface PublishRecord {
  version: 1;
  hub: Hub;
  org: string;
  name: string;
  commit: string;
  /** Revision names (branches, tags) that pointed at this commit when pulled. */
  revisions: string[];
  files: RecordFile[];
  bytes: number;
  /** True when every file of the revision is present (no --include/--exclude narrowed it). */
  complete: boolean;
  publishedAt: string;
  lastUsedAt: string;
  /**
   * Where the views of this revision are, under the root of the store that read the record.
   * On disk they are kept relative to the store (the store is a volume mounted at different paths
   * by different containers); a record is never trusted for an absolute path (older versions wrote
   * absolute ones, which are ignored).
   */
  paths: ViewPaths;
}

const hex = (n: number) => z.string().regex(new RegExp(`^[0-9a-f]{${n}}$`), `expected ${n} lowercase hex digits`);
const size = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** One file of a record, as stored (and as bundles carry it: bundle/format.ts reuses the shape). */
export const recordFileShape = {
  path: z.string(),
  size,
  sha256: hex(64),
  gitOid: hex(40).optional(),
  lfs: z.boolean(),
  verified: z.boolean(),
};

const byteCount = z.number().int().nonnegative();
const provenanceSchema = z.object({
  via: z.enum(['download', 'store', 'bundle']),
  hub: z.enum(['hf', 'ms', 's3']),
  commit: z.string(),
  at: z.string(),
  endpoint: z.string().optional(),
  bytes: z.object({ origin: byteCount, peer: byteCount, replica: byteCount }).optional(),
  lock: z.object({ file: z.string(), sha256: z.string() }).optional(),
  bundle: z.object({ file: z.string(), signedBy: z.string().optional() }).optional(),
});

/**
 * A record as stored. Unknown keys are dropped rather than refused, so a later version-1 writer
 * may add fields. `paths` is never trusted (readers place the views under their own root).
 */
const storedRecordSchema = z.object({
  version: z.literal(RECORD_VERSION),
  hub: z.enum(['hf', 'ms', 's3']),
  org: z.string(),
  name: z.string(),
  commit: hex(40),
  revisions: z.array(z.string()),
  // Provenance only informs: a form this version does not know (a later writer's) is dropped, never
  // a reason to call the record damaged.
  files: z.array(z.object({ ...recordFileShape, from: provenanceSchema.optional().catch(undefined) })),
  bytes: size,
  complete: z.boolean(),
  publishedAt: z.string(),
  lastUsedAt: z.string(),
});

const BAD_RECORD = 'ESF_BAD_RECORD';

/** A record that cannot be read as one (torn, edited, foreign): exit 6, naming the file and the way out. */
export function isDamagedRecord(e: unknown): boolean {
  return isSwiftFetchError(e) && (e.code === BAD_RECORD || e.code === 'ESF_RECORD_VERSION');
}

/**
 * Parse a record file. Whatever it holds is checked as untrusted input - its names and paths by
 * the same rules as a hub listing, and that it describes the revision its place in the store says -
 * because its names become paths under the store.
 */
export function parseRecord(text: string, file: string, expect: { repoKey: string; commit: string }): Omit<PublishRecord, 'paths'> {
  const damaged = (why: string) =>
    new StorageError(`damaged publish record ${file}: ${why}; pull the model again to rewrite it (or delete the file)`, BAD_RECORD);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw damaged(`not JSON (${(e as Error).message}): torn by a crash, or written by another program`);
  }
  const version = (raw as { version?: unknown } | null)?.version;
  if (typeof version === 'number' && version !== RECORD_VERSION) {
    throw new StorageError(`publish record ${file} is format version ${version}; this swift-fetch reads version ${RECORD_VERSION} (was the store written by a newer one?)`, 'ESF_RECORD_VERSION');
  }
  const r = storedRecordSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw damaged(`${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const rec = r.data;
  if (!isSafeRepo(rec.hub, rec.org, rec.name)) throw damaged(`${JSON.stringify(`${rec.org}/${rec.name}`)} is not a ${rec.hub} repo name`);
  if (repoKey(rec) !== expect.repoKey || rec.commit !== expect.commit) {
    throw damaged(`it describes ${rec.hub}://${rec.org}/${rec.name}@${rec.commit}, not the revision its place in the store names`);
  }
  try {
    validateListing(rec.files.map((f) => f.path));
  } catch (e) {
    throw damaged((e as Error).message);
  }
  return rec as Omit<PublishRecord, 'paths'>;
}

export async function writeRecord(l: StoreLayout, rec: PublishRecord): Promise<void> {
  await writeFileAtomic(l.recordPath(rec, rec.commit), JSON.stringify({ ...rec, paths: l.relativePaths(rec.paths) }, null, 2), { within: l.root });
}

/** Remember which commit `revision` names, for offline lookups (a commit id needs no ref). */
export async function writeLocalRef(l: StoreLayout, key: RepoKeyParts, revision: string, commit: string): Promise<void> {
  if (!isCommitId(revision)) await writeFileAtomic(l.localRefPath(key, revision), commit, { within: l.root });
}

/** The record of one revision; undefined when there is none, StorageError (isDamagedRecord) when it is unreadable. */
export async function readRecord(l: StoreLayout, key: RepoKeyParts, commit: string): Promise<PublishRecord | undefined> {
  return readRecordFile(l, l.recordPath(key, commit), { repoKey: repoKey(key), commit });
}

async function readRecordFile(l: StoreLayout, file: string, expect: { repoKey: string; commit: string }): Promise<PublishRecord | undefined> {
  const text = await readText(file);
  if (text === undefined) return undefined;
  return located(l, parseRecord(text, file, expect));
}

/** The commit a revision name pointed at when last pulled into this store (offline lookup). */
export async function localCommit(l: StoreLayout, key: RepoKeyParts, revision: string): Promise<string | undefined> {
  if (isCommitId(revision)) return revision;
  const c = (await readText(l.localRefPath(key, revision)))?.trim();
  return c && isCommitId(c) ? c : undefined;
}

/** The record for a ref resolved against this store only; NotFoundError when it was never pulled. */
export async function findRecord(l: StoreLayout, key: RepoKeyParts, revision: string): Promise<PublishRecord> {
  const commit = await localCommit(l, key, revision);
  const rec = commit ? await readRecord(l, key, commit) : undefined;
  if (!rec) {
    throw new NotFoundError(`${key.hub}://${key.org}/${key.name}@${revision} is not in the store ${l.root}: pull it first`, 'ESF_NOT_IN_STORE');
  }
  return rec;
}

export async function listRecords(l: StoreLayout): Promise<PublishRecord[]> {
  const out: PublishRecord[] = [];
  let repos: string[];
  try {
    repos = await fsp.readdir(l.recordsDir);
  } catch {
    return out;
  }
  for (const repo of repos.sort()) {
    for (const file of (await fsp.readdir(join(l.recordsDir, repo)).catch(() => [] as string[])).sort()) {
      if (!file.endsWith('.json')) continue;
      // The folder is repoKey(record) and the file its commit: a record elsewhere is not one.
      const rec = await readRecordFile(l, join(l.recordsDir, repo, file), { repoKey: repo, commit: file.slice(0, -'.json'.length) });
      if (rec) out.push(rec);
    }
  }
  return out;
}

/** The records of one repo only. */
export async function repoRecords(l: StoreLayout, key: RepoKeyParts): Promise<PublishRecord[]> {
  const out: PublishRecord[] = [];
  for (const file of await fsp.readdir(l.recordDir(key)).catch(() => [] as string[])) {
    if (!file.endsWith('.json')) continue;
    const rec = await readRecord(l, key, file.slice(0, -'.json'.length));
    if (rec) out.push(rec);
  }
  return out;
}

/** Stamp a revision as used now (GC evicts the least recently used first). */
export async function touch(l: StoreLayout, key: RepoKeyParts, commit: string): Promise<void> {
  // A stamp for GC's LRU order; a lost or torn one falls back to the record's own time.
  await writeFileAtomic(l.usedPath(key, commit), new Date().toISOString(), { durable: false, within: l.root });
}

/**
 * The record of a revision about to be (re)written, or undefined when there is none or it is
 * damaged: what replaces it is freshly verified, so a damaged one is repaired, not fatal.
 */
export async function replaceableRecord(l: StoreLayout, key: RepoKeyParts, commit: string): Promise<PublishRecord | undefined> {
  try {
    return await readRecord(l, key, commit);
  } catch (e) {
    if (isDamagedRecord(e)) return undefined;
    throw e;
  }
}

/** A record as read from disk: its view paths placed under this store's root, its last use from the stamp. */
async function located(l: StoreLayout, rec: Omit<PublishRecord, 'paths'>): Promise<PublishRecord> {
  const t = (await readText(l.usedPath(rec, rec.commit)))?.trim();
  const lastUsedAt = t && !Number.isNaN(Date.parse(t)) ? t : rec.lastUsedAt;
  return { ...rec, lastUsedAt, paths: l.viewPaths(rec, rec.commit) };
}
