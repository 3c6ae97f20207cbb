/**
 * Publishing a revision: make every view show it, whole, and record what was verified.
 */
import { promises as fsp, type Stats } from 'node:fs';
import pLimit from 'p-limit';
import { dirname, join } from 'node:path';
import { StorageError } from '../core/errors.js';
import { hfEtag, totalBytes, type FileEntry } from '../core/manifest.js';
import { isCommitId } from '../core/ref.js';
import { freshen, hasBlob } from './blobs.js';
import { ensureDir, foreignLink, linkOrCopy, lstatOrUndefined, storageError, symlinkAtomic, tryLink, uniqueSuffix, writeFileAtomic } from './fsutil.js';
import type { RepoKeyParts, StoreLayout } from './layout.js';
import { replaceableRecord, touch, writeLocalRef, writeRecord, type FileProvenance, type PublishRecord, type RecordFile } from './records.js';
import { makeWorkDir } from './work.js';

export interface PublishInput {
  key: RepoKeyParts;
  commit: string;
  /** The revision name the user asked for (may equal the commit). */
  revision: string;
  /** Selected files with the SHA-256 of their content (verified, already in the blob store), and where it came from. */
  files: Array<FileEntry & { sha256: string; verified: boolean; from?: FileProvenance }>;
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
  const views = new ViewWriter(l, previous);
  try {
    const paths = l.viewPaths(key, commit);
    await views.buildTree(paths.plain, input.files, (f) => ({ kind: 'link', src: l.blobPath(f.sha256) }));
    if (key.hub === 'hf') await publishHf(views, input);
    else if (key.hub === 'ms') await publishMs(views, input);
    // s3:// models have only the plain view: no hub library reads them by id.
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

async function publishHf(views: ViewWriter, input: PublishInput): Promise<void> {
  const { l } = views;
  const repo = l.hfRepoDir(input.key);
  const blobs = join(repo, 'blobs');
  await ensureDir(l.root, blobs);
  await views.putAll(input.files, (f) => [join(blobs, hfEtag(f)), { kind: 'link', src: l.blobPath(f.sha256) }]);
  const snap = join(repo, 'snapshots', input.commit);
  // Relative links, exactly as huggingface_hub makes them: one more "../" per directory level.
  await views.buildTree(snap, input.files, (f) => ({
    kind: 'symlink',
    target: `${'../'.repeat(2 + f.path.split('/').length - 1)}blobs/${hfEtag(f)}`,
  }));
  if (!isCommitId(input.revision)) {
    // huggingface_hub writes refs/<rev> without a trailing newline.
    await writeFileAtomic(join(repo, 'refs', ...input.revision.split('/')), input.commit, { within: l.root });
  }
}

async function publishMs(views: ViewWriter, input: PublishInput): Promise<void> {
  const { l } = views;
  // modelscope (modelscope_hub) reads <cache>/models/<org>--<name>/snapshots/<revision>/ offline,
  // trying the requested revision, then master/main. The commit directory holds the files; the
  // revision names are symlinks to it, swapped atomically when a branch moves.
  const snaps = join(l.msRepoDir(input.key), 'snapshots');
  const dir = join(snaps, input.commit);
  await views.buildTree(dir, input.files, (f) => ({ kind: 'link', src: l.blobPath(f.sha256) }));
  if (!isCommitId(input.revision) && !input.revision.includes('/')) {
    await symlinkAtomic(input.commit, join(snaps, input.revision), l.root);
  }
}

/** A file of a view: a hard link to (or copy of) a blob, or a relative symlink (HF snapshots). */
type ViewEntry = { kind: 'link'; src: string } | { kind: 'symlink'; target: string };

/** Entries checked or placed at once: enough to keep the filesystem's worker threads busy. */
const VIEW_CONCURRENCY = 16;

/**
 * The views of one publish. No folder on the way may be a link (ensureDir: the store never makes
 * one there), and an existing entry is kept only when it is exactly what the store would make.
 */
class ViewWriter {
  /** What the record being replaced says each path held; it vouches for copies (see putEntry). */
  private readonly before: Map<string, string>;
  private readonly blobStats = new Map<string, Promise<Stats>>();
  private readonly limit = pLimit(VIEW_CONCURRENCY);

  constructor(
    readonly l: StoreLayout,
    previous: PublishRecord | undefined,
  ) {
    this.before = new Map((previous?.files ?? []).map((f) => [f.path, f.sha256]));
  }

  /**
   * Make `dir` contain every given file. A missing dir is built completely in tmp/ and renamed
   * into place (so it appears whole); an existing one gets each missing or wrong entry by an
   * atomic rename.
   */
  async buildTree(dir: string, files: readonly StoredFile[], entry: (f: StoredFile) => ViewEntry): Promise<void> {
    const { l } = this;
    await ensureDir(l.root, dirname(dir));
    const st = await lstatOrUndefined(dir);
    if (st?.isSymbolicLink()) throw foreignLink(dir);
    if (st) return this.fillIn(dir, files, entry);
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
        await this.fillIn(dir, files, entry);
      }
    } finally {
      await fsp.rm(work, { recursive: true, force: true });
    }
  }

  /** Give an existing view dir every file: a file planted or left there is never trusted for its name. */
  private async fillIn(dir: string, files: readonly StoredFile[], entry: (f: StoredFile) => ViewEntry): Promise<void> {
    const dests = files.map((f) => join(dir, ...f.path.split('/')));
    for (const parent of new Set(dests.map((d) => dirname(d)))) await ensureDir(this.l.root, parent);
    await this.putAll(files, (f, i) => [dests[i]!, entry(f)]);
  }

  /** putEntry for every file (its folder exists and was checked), a few at a time. */
  putAll(files: readonly StoredFile[], at: (f: StoredFile, i: number) => [string, ViewEntry]): Promise<void[]> {
    return Promise.all(files.map((f, i) => this.limit(() => this.putEntry(...at(f, i), this.before.get(f.path) === f.sha256))));
  }

  /**
   * Make `dest` exactly `e`, in one rename (a reader sees the old entry or the new one), unless it
   * already is: the exact symlink, or the blob itself (same inode). A file that is not the blob is
   * replaced by a link to it; only where the filesystem refuses links, so that views hold copies,
   * is a regular file of the right size kept when `vouched` (the record being replaced said this
   * path held this content) - copying every file again on each publish would cost too much there.
   */
  private async putEntry(dest: string, e: ViewEntry, vouched: boolean): Promise<void> {
    const st = await lstatOrUndefined(dest);
    if (e.kind === 'symlink' && st?.isSymbolicLink() && (await fsp.readlink(dest)) === e.target) return;
    const blob = e.kind === 'link' ? await this.blobStat(e.src) : undefined;
    if (blob && st?.isFile() && st.ino === blob.ino && st.dev === blob.dev) return;
    const tmp = `${dest}.tmp-${uniqueSuffix()}`;
    try {
      if (e.kind === 'symlink') await fsp.symlink(e.target, tmp);
      else if (!(await tryLink(e.src, tmp))) {
        if (st?.isFile() && vouched && st.size === blob!.size) return;
        await fsp.copyFile(e.src, tmp);
      }
      await fsp.rename(tmp, dest);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    }
  }

  private blobStat(path: string): Promise<Stats> {
    let p = this.blobStats.get(path);
    if (!p) this.blobStats.set(path, (p = fsp.stat(path)));
    return p;
  }
}

function toRecordFile(f: PublishInput['files'][number]): RecordFile {
  const r: RecordFile = { path: f.path, size: f.size, sha256: f.sha256, lfs: f.lfs, verified: f.verified };
  if (f.gitOid) r.gitOid = f.gitOid;
  if (f.from) r.from = f.from;
  return r;
}

function mergeFiles(a: RecordFile[], b: RecordFile[]): RecordFile[] {
  const m = new Map(a.map((f) => [f.path, f]));
  for (const f of b) {
    // A publish that knows nothing of where the same content came from keeps what was known.
    const prev = m.get(f.path);
    m.set(f.path, !f.from && prev?.from && prev.sha256 === f.sha256 ? { ...f, from: prev.from } : f);
  }
  return [...m.values()].sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}
