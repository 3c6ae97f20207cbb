/**
 * The store, as callers see it: one object per store root whose methods are the verbs. Each verb
 * lives in its own module, as in npm's cacache - layout.ts (where things are), blobs.ts (the
 * content store), publish.ts (views + record), records.ts (records and refs), remove.ts,
 * sweep.ts (freeing blobs, usage) - and this facade only binds them to one root.
 *
 * Content-addressed blobs under a hidden folder, and three views built from hard links to them
 * (huggingface_hub cache, ModelScope cache, a plain directory). Safe on shared volumes: every step
 * that makes something visible is a rename, and nothing here uses locks.
 */
import { commitBlob, freshen, hasBlob, initStore, shaForGitOid } from './blobs.js';
import { StoreLayout, type RepoKeyParts } from './layout.js';
import { publish, type PublishInput } from './publish.js';
import { findRecord, listRecords, localCommit, readRecord, replaceableRecord, touch, type PublishRecord } from './records.js';
import { removeRevision } from './remove.js';
import { sweepBlobs, usage } from './sweep.js';
import { makeWorkDir, sweepWorkDirs, type WorkKind } from './work.js';

export type { RepoKeyParts, ViewPaths } from './layout.js';
export type { PublishInput } from './publish.js';
export type { FileProvenance, PublishRecord, RecordFile } from './records.js';

export class Store extends StoreLayout {
  init(): Promise<void> {
    return initStore(this);
  }

  // ---- blobs
  hasBlob(sha256: string): Promise<boolean> {
    return hasBlob(this, sha256);
  }
  /** SHA-256 of a blob known only by its git oid (HF small files), if we stored one before. */
  shaForGitOid(oid: string): Promise<string | undefined> {
    return shaForGitOid(this, oid);
  }
  /** Move a verified file into the blob store ("already there" is success). */
  commitBlob(tmpPath: string, sha256: string, gitOid?: string): Promise<string> {
    return commitBlob(this, tmpPath, sha256, gitOid);
  }
  /** Mark a blob as just used, so a concurrent sweep's grace period protects it until it is linked. */
  freshen(blob: string): Promise<void> {
    return freshen(blob);
  }

  // ---- views
  /** Publish a revision whose blobs are all verified and committed: every view shows it whole. */
  publish(input: PublishInput): Promise<PublishRecord> {
    return publish(this, input);
  }

  // ---- records and refs
  readRecord(key: RepoKeyParts, commit: string): Promise<PublishRecord | undefined> {
    return readRecord(this, key, commit);
  }
  /** The record of a revision about to be re-verified: a damaged one counts as none (it will be rewritten). */
  replaceableRecord(key: RepoKeyParts, commit: string): Promise<PublishRecord | undefined> {
    return replaceableRecord(this, key, commit);
  }
  /** The commit a revision name pointed at when last pulled into this store (offline lookup). */
  localCommit(key: RepoKeyParts, revision: string): Promise<string | undefined> {
    return localCommit(this, key, revision);
  }
  /** The record for a ref resolved against this store only; NotFoundError when it was never pulled. */
  findRecord(key: RepoKeyParts, revision: string): Promise<PublishRecord> {
    return findRecord(this, key, revision);
  }
  listRecords(): Promise<PublishRecord[]> {
    return listRecords(this);
  }
  touch(key: RepoKeyParts, commit: string): Promise<void> {
    return touch(this, key, commit);
  }

  // ---- removal, sweeping, usage
  /** Remove one revision from every view and forget its record (blobs stay until a sweep). */
  removeRevision(key: RepoKeyParts, commit: string): Promise<void> {
    return removeRevision(this, key, commit);
  }
  /** Delete blobs nothing references or links any more (young ones only when named in `immediate`). */
  sweepBlobs(opts: { graceMs?: number; immediate?: Iterable<string> } = {}): Promise<{ freedBytes: number; freedBlobs: number }> {
    return sweepBlobs(this, opts);
  }
  usage(): Promise<{ usedBytes: number; freeBytes: number }> {
    return usage(this);
  }

  // ---- work folders
  /** A pin (partial/pin-*) or staging (tmp/stage-*) folder naming this process as its maker. */
  makeWorkDir(kind: WorkKind, lease?: string): Promise<string> {
    return makeWorkDir(this, kind, lease);
  }
  /** Remove the work folders of dead makers (see work.ts); returns them. */
  sweepWorkDirs(dryRun = false): Promise<string[]> {
    return sweepWorkDirs(this, dryRun);
  }
}
