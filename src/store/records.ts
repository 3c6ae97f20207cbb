/**
 * Records and refs: what a publish verified (one JSON file per revision) and which commit a
 * revision name pointed at, so that `path`, `ls`, `verify`, GC and offline pulls answer from the
 * store alone.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { NotFoundError } from '../core/errors.js';
import type { Hub } from '../core/ref.js';
import { isCommitId } from '../core/ref.js';
import { readText, writeFileAtomic } from './fsutil.js';
import type { RepoKeyParts, StoreLayout, ViewPaths } from './layout.js';

export interface RecordFile {
  path: string;
  size: number;
  sha256: string;
  gitOid?: string;
  lfs: boolean;
  /** False only for files the hub gave no hash for (ModelScope without Sha256): stored, but unverified. */
  verified: boolean;
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

export async function writeRecord(l: StoreLayout, rec: PublishRecord): Promise<void> {
  await writeFileAtomic(l.recordPath(rec, rec.commit), JSON.stringify({ ...rec, paths: l.relativePaths(rec.paths) }, null, 2));
}

/** Remember which commit `revision` names, for offline lookups (a commit id needs no ref). */
export async function writeLocalRef(l: StoreLayout, key: RepoKeyParts, revision: string, commit: string): Promise<void> {
  if (!isCommitId(revision)) await writeFileAtomic(l.localRefPath(key, revision), commit);
}

export async function readRecord(l: StoreLayout, key: RepoKeyParts, commit: string): Promise<PublishRecord | undefined> {
  const text = await readText(l.recordPath(key, commit));
  if (text === undefined) return undefined;
  return located(l, JSON.parse(text) as PublishRecord);
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
      const text = await readText(join(l.recordsDir, repo, file));
      if (!text) continue;
      out.push(await located(l, JSON.parse(text) as PublishRecord));
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
  await writeFileAtomic(l.usedPath(key, commit), new Date().toISOString(), { durable: false });
}

/** A record as read from disk: its view paths placed under this store's root, its last use from the stamp. */
async function located(l: StoreLayout, rec: PublishRecord): Promise<PublishRecord> {
  const t = (await readText(l.usedPath(rec, rec.commit)))?.trim();
  const lastUsedAt = t && !Number.isNaN(Date.parse(t)) ? t : rec.lastUsedAt;
  return { ...rec, lastUsedAt, paths: l.viewPaths(rec, rec.commit) };
}
