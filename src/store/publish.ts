/**
 * Publishing a revision: make every view show it, whole, and record what was verified.
 */
import { promises as fsp } from 'node:fs';
import { dirname, join } from 'node:path';
import { StorageError } from '../core/errors.js';
import { hfEtag, totalBytes, type FileEntry } from '../core/manifest.js';
import { isCommitId } from '../core/ref.js';
import { freshen, hasBlob } from './blobs.js';
import { ensureDir, foreignLink, linkOrCopy, lstatOrUndefined, storageError, symlinkAtomic, tryLink, uniqueSuffix, writeFileAtomic } from './fsutil.js';
import type { RepoKeyParts, StoreLayout } from './layout.js';
import { replaceableRecord, touch, writeLocalRef, writeRecord, type PublishRecord, type RecordFile } from './records.js';
import { makeWorkDir } from './work.js';

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
  // What the record being replaced says a path held; it vouches for copies (see putEntry).
  const before = new Map((previous?.files ?? []).map((f) => [f.path, f.sha256]));
  const vouched = (f: StoredFile) => before.get(f.path) === f.sha256;
  try {
    const paths = l.viewPaths(key, commit);
    await buildTree(l, paths.plain, input.files, (f) => ({ kind: 'link', src: l.blobPath(f.sha256) }), vouched);
    if (key.hub === 'hf') await publishHf(l, input, vouched);
    else await publishMs(l, input, vouched);
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

async function publishHf(l: StoreLayout, input: PublishInput, vouched: (f: StoredFile) => boolean): Promise<void> {
  const repo = l.hfRepoDir(input.key);
  const blobs = join(repo, 'blobs');
  await ensureDir(l.root, blobs);
  for (const f of input.files) await putEntry(join(blobs, hfEtag(f)), { kind: 'link', src: l.blobPath(f.sha256) }, vouched(f));
  const snap = join(repo, 'snapshots', input.commit);
  // Relative links, exactly as huggingface_hub makes them: one more "../" per directory level.
  await buildTree(l, snap, input.files, (f) => ({
    kind: 'symlink',
    target: `${'../'.repeat(2 + f.path.split('/').length - 1)}blobs/${hfEtag(f)}`,
  }), () => false);
  if (!isCommitId(input.revision)) {
    // huggingface_hub writes refs/<rev> without a trailing newline.
    await writeFileAtomic(join(repo, 'refs', ...input.revision.split('/')), input.commit, { within: l.root });
  }
}

async function publishMs(l: StoreLayout, input: PublishInput, vouched: (f: StoredFile) => boolean): Promise<void> {
  // modelscope (modelscope_hub) reads <cache>/models/<org>--<name>/snapshots/<revision>/ offline,
  // trying the requested revision, then master/main. The commit directory holds the files; the
  // revision names are symlinks to it, swapped atomically when a branch moves.
  const snaps = join(l.msRepoDir(input.key), 'snapshots');
  const dir = join(snaps, input.commit);
  await buildTree(l, dir, input.files, (f) => ({ kind: 'link', src: l.blobPath(f.sha256) }), vouched);
  if (!isCommitId(input.revision) && !input.revision.includes('/')) {
    await symlinkAtomic(input.commit, join(snaps, input.revision), l.root);
  }
}

/** A file of a view: a hard link to (or copy of) a blob, or a relative symlink (HF snapshots). */
type ViewEntry = { kind: 'link'; src: string } | { kind: 'symlink'; target: string };

/**
 * Make `dir` contain every given file. A missing dir is built completely in tmp/ and renamed
 * into place (so it appears whole); an existing one gets each missing or wrong entry by an atomic
 * rename. No folder on the way may be a link (ensureDir): the store never makes one there.
 */
async function buildTree(l: StoreLayout, dir: string, files: readonly StoredFile[], entry: (f: StoredFile) => ViewEntry, vouched: (f: StoredFile) => boolean): Promise<void> {
  await ensureDir(l.root, dirname(dir));
  const st = await lstatOrUndefined(dir);
  if (st?.isSymbolicLink()) throw foreignLink(dir);
  if (st) return fillIn(l, dir, files, entry, vouched);
  // Stage at the same depth below tmp/ as the final dir has below its parent's parent, so
  // relative symlinks need no rewriting when the directory moves.
  const work = await makeWorkDir(l, 'stage');
  const stage = join(work, 'snap');
  await fsp.mkdir(stage);
  try {
    for (const f of files) {
      const dest = join(stage, ...f.path.split('/'));
      await fsp.mkdir(dirname(dest), { recursive: true });
      const e = entry(f);
      if (e.kind === 'link') await linkOrCopy(e.src, dest);
      else await fsp.symlink(e.target, dest);
    }
    try {
      await fsp.rename(stage, dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      // Someone published the same revision meanwhile: add what they lack, keep theirs.
      await fillIn(l, dir, files, entry, vouched);
    }
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

/**
 * Give an existing view dir every file, replacing each entry that is not exactly what the store
 * would make: a file planted or left there (a link to elsewhere, other content from a forged
 * record) is never trusted because of its name.
 */
async function fillIn(l: StoreLayout, dir: string, files: readonly StoredFile[], entry: (f: StoredFile) => ViewEntry, vouched: (f: StoredFile) => boolean): Promise<void> {
  const checked = new Set<string>();
  for (const f of files) {
    const dest = join(dir, ...f.path.split('/'));
    const parent = dirname(dest);
    if (!checked.has(parent)) {
      await ensureDir(l.root, parent);
      checked.add(parent);
    }
    await putEntry(dest, entry(f), vouched(f));
  }
}

/**
 * Make `dest` exactly `e`, in one rename (a reader sees the old entry or the new one), unless it
 * already is: the exact symlink, or the blob itself (same inode). A file that is not the blob is
 * replaced by a link to it; only where the filesystem refuses links, so that views hold copies,
 * is a regular file of the right size kept when `vouched` (the record being replaced said this
 * path held this content) - copying every file again on each publish would cost too much there.
 */
async function putEntry(dest: string, e: ViewEntry, vouched: boolean): Promise<void> {
  const st = await lstatOrUndefined(dest);
  const tmp = `${dest}.tmp-${uniqueSuffix()}`;
  try {
    if (e.kind === 'symlink') {
      if (st?.isSymbolicLink() && (await fsp.readlink(dest)) === e.target) return;
      await fsp.symlink(e.target, tmp);
    } else {
      const blob = await fsp.stat(e.src);
      if (st?.isFile() && st.ino === blob.ino && st.dev === blob.dev) return;
      if (!(await tryLink(e.src, tmp))) {
        if (st?.isFile() && vouched && st.size === blob.size) return;
        await fsp.copyFile(e.src, tmp);
      }
    }
    await fsp.rename(tmp, dest);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
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
