/**
 * Publishing a revision: make every view show it, whole, and record what was verified.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { StorageError } from '../core/errors.js';
import { hfEtag, totalBytes, type FileEntry } from '../core/manifest.js';
import { isCommitId } from '../core/ref.js';
import { freshen, hasBlob } from './blobs.js';
import { exists, linkOrCopy, storageError, symlinkAtomic, uniqueSuffix, writeFileAtomic } from './fsutil.js';
import type { RepoKeyParts, StoreLayout } from './layout.js';
import { replaceableRecord, touch, writeLocalRef, writeRecord, type PublishRecord, type RecordFile } from './records.js';

export interface PublishInput {
  key: RepoKeyParts;
  commit: string;
  /** The revision name the user asked for (may equal the commit). */
  revision: string;
  /** Selected files with the SHA-256 of their content (verified, already in the blob store). */
  files: Array<FileEntry & { sha256: string; verified: boolean }>;
  complete: boolean;
}

type StoredFile = FileEntry & { sha256: string };

/**
 * Publish a revision whose blobs are all verified and committed. Each view appears whole:
 * a new snapshot directory is built in tmp/ and renamed into place; files added to an existing
 * snapshot (a wider --include later) appear one atomic rename at a time. Refs move last.
 */
export async function publish(l: StoreLayout, input: PublishInput): Promise<PublishRecord> {
  const { key, commit } = input;
  for (const f of input.files) {
    if (!(await hasBlob(l, f.sha256))) throw new StorageError(`blob ${f.sha256} of ${f.path} vanished from ${l.root} before publishing (removed by another process?)`, 'ESF_BLOB_MISSING');
    await freshen(l.blobPath(f.sha256));
  }
  const previous = await replaceableRecord(l, key, commit);
  const files = mergeFiles(previous?.files ?? [], input.files.map(toRecordFile));
  try {
    const paths = l.viewPaths(key, commit);
    await buildTree(l, paths.plain, input.files, (f) => ({ kind: 'link', src: l.blobPath(f.sha256) }));
    if (key.hub === 'hf') await publishHf(l, input);
    else await publishMs(l, input);
    const revisions = [...new Set([...(previous?.revisions ?? []), ...(isCommitId(input.revision) ? [] : [input.revision])])];
    const now = new Date().toISOString();
    const record: PublishRecord = {
      version: 1,
      hub: key.hub,
      org: key.org,
      name: key.name,
      commit,
      revisions,
      files,
      bytes: totalBytes(files),
      complete: input.complete || Boolean(previous?.complete),
      publishedAt: previous?.publishedAt ?? now,
      lastUsedAt: now,
      paths,
    };
    await writeRecord(l, record);
    await touch(l, key, commit);
    await writeLocalRef(l, key, input.revision, commit);
    return record;
  } catch (e) {
    throw storageError(e, l.root);
  }
}

async function publishHf(l: StoreLayout, input: PublishInput): Promise<void> {
  const repo = l.hfRepoDir(input.key);
  await fsp.mkdir(join(repo, 'blobs'), { recursive: true });
  for (const f of input.files) {
    await linkOrCopy(l.blobPath(f.sha256), join(repo, 'blobs', hfEtag(f)));
  }
  const snap = join(repo, 'snapshots', input.commit);
  // Relative links, exactly as huggingface_hub makes them: one more "../" per directory level.
  await buildTree(l, snap, input.files, (f) => ({
    kind: 'symlink',
    target: `${'../'.repeat(2 + f.path.split('/').length - 1)}blobs/${hfEtag(f)}`,
  }));
  if (!isCommitId(input.revision)) {
    // huggingface_hub writes refs/<rev> without a trailing newline.
    await writeFileAtomic(join(repo, 'refs', ...input.revision.split('/')), input.commit);
  }
}

async function publishMs(l: StoreLayout, input: PublishInput): Promise<void> {
  // modelscope (modelscope_hub) reads <cache>/models/<org>--<name>/snapshots/<revision>/ offline,
  // trying the requested revision, then master/main. The commit directory holds the files; the
  // revision names are symlinks to it, swapped atomically when a branch moves.
  const snaps = join(l.msRepoDir(input.key), 'snapshots');
  const dir = join(snaps, input.commit);
  await buildTree(l, dir, input.files, (f) => ({ kind: 'link', src: l.blobPath(f.sha256) }));
  if (!isCommitId(input.revision) && !input.revision.includes('/')) {
    await symlinkAtomic(input.commit, join(snaps, input.revision));
  }
}

/**
 * Make `dir` contain every given file. A missing dir is built completely in tmp/ and renamed
 * into place (so it appears whole); an existing one gets each missing entry by an atomic rename.
 */
async function buildTree(
  l: StoreLayout,
  dir: string,
  files: readonly StoredFile[],
  entry: (f: StoredFile) => { kind: 'link'; src: string } | { kind: 'symlink'; target: string },
): Promise<void> {
  const place = async (base: string, f: StoredFile, atomic: boolean) => {
    const dest = join(base, ...f.path.split('/'));
    await fsp.mkdir(join(dest, '..'), { recursive: true });
    const e = entry(f);
    const tmp = atomic ? `${dest}.tmp-${uniqueSuffix()}` : dest;
    if (e.kind === 'link') await linkOrCopy(e.src, tmp);
    else await fsp.symlink(e.target, tmp);
    if (atomic) await fsp.rename(tmp, dest);
  };
  if (await exists(dir)) {
    for (const f of files) {
      if (!(await exists(join(dir, ...f.path.split('/'))))) await place(dir, f, true);
    }
    return;
  }
  // Stage at the same depth below tmp/ as the final dir has below its parent's parent, so
  // relative symlinks need no rewriting when the directory moves.
  const stage = join(l.tmpDir, `stage-${uniqueSuffix()}`, 'snap');
  await fsp.mkdir(stage, { recursive: true });
  try {
    for (const f of files) await place(stage, f, false);
    await fsp.mkdir(join(dir, '..'), { recursive: true });
    try {
      await fsp.rename(stage, dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      // Someone published the same revision meanwhile: add what they lack, keep theirs.
      for (const f of files) {
        if (!(await exists(join(dir, ...f.path.split('/'))))) await place(dir, f, true);
      }
    }
  } finally {
    await fsp.rm(join(stage, '..'), { recursive: true, force: true });
  }
}

function toRecordFile(f: FileEntry & { sha256: string; verified: boolean }): RecordFile {
  const r: RecordFile = { path: f.path, size: f.size, sha256: f.sha256, lfs: f.lfs, verified: f.verified };
  if (f.gitOid) r.gitOid = f.gitOid;
  return r;
}

function mergeFiles(a: RecordFile[], b: RecordFile[]): RecordFile[] {
  const m = new Map(a.map((f) => [f.path, f]));
  for (const f of b) m.set(f.path, f);
  return [...m.values()].sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}
