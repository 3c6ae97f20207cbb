import { promises as fsp } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { NotFoundError, StorageError } from '../core/errors.js';
import { hfEtag, totalBytes, type FileEntry } from '../core/manifest.js';
import { isCommitId, repoKey, type Hub } from '../core/ref.js';
import { listLeases } from './lease.js';
import { exists, linkOrCopy, readText, storageError, symlinkAtomic, uniqueSuffix, writeFileAtomic } from './fsutil.js';

export interface RepoKeyParts {
  hub: Hub;
  org: string;
  name: string;
}

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

export interface ViewPaths {
  plain: string;
  hf?: string;
  ms?: string;
}

export interface PublishInput {
  key: RepoKeyParts;
  commit: string;
  /** The revision name the user asked for (may equal the commit). */
  revision: string;
  /** Selected files with the SHA-256 of their content (verified, already in the blob store). */
  files: Array<FileEntry & { sha256: string; verified: boolean }>;
  complete: boolean;
}

/** Blobs younger than this are never swept: a publish may be about to link them. */
const DEFAULT_SWEEP_GRACE_MS = 10 * 60_000;

/**
 * The store: content-addressed blobs under a hidden folder, and three views built from hard links
 * to them (huggingface_hub cache, ModelScope cache, a plain directory). Safe on shared volumes:
 * every step that makes something visible is a rename, and nothing here uses locks.
 */
export class Store {
  readonly root: string;
  readonly internal: string;

  constructor(root: string) {
    this.root = root;
    this.internal = join(root, '.swift-fetch');
  }

  get partialDir(): string {
    return join(this.internal, 'partial');
  }
  get leaseDir(): string {
    return join(this.internal, 'leases');
  }
  private get tmpDir(): string {
    return join(this.internal, 'tmp');
  }

  blobPath(sha256: string): string {
    return join(this.internal, 'blobs', 'sha256', sha256.slice(0, 2), sha256);
  }

  async init(): Promise<void> {
    try {
      for (const d of [this.partialDir, this.tmpDir, this.leaseDir, join(this.internal, 'blobs', 'sha256')]) {
        await fsp.mkdir(d, { recursive: true });
      }
    } catch (e) {
      throw storageError(e, this.root);
    }
  }

  async hasBlob(sha256: string): Promise<boolean> {
    return exists(this.blobPath(sha256));
  }

  /** SHA-256 of a blob known only by its git oid (HF small files), if we stored one before. */
  async shaForGitOid(oid: string): Promise<string | undefined> {
    const sha = (await readText(join(this.internal, 'aliases', 'git', oid)))?.trim();
    if (sha && /^[0-9a-f]{64}$/.test(sha) && (await this.hasBlob(sha))) return sha;
    return undefined;
  }

  /**
   * Move a verified file into the blob store. Linking (not renaming) makes "already there" an
   * atomic no-op: the existing inode keeps every view that links it.
   */
  async commitBlob(tmpPath: string, sha256: string, gitOid?: string): Promise<string> {
    const dest = this.blobPath(sha256);
    try {
      await fsp.mkdir(join(dest, '..'), { recursive: true });
      await fsp.chmod(tmpPath, 0o444);
      try {
        await fsp.link(tmpPath, dest);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') {
          await this.freshen(dest);
        } else if (code === 'EXDEV' || code === 'EPERM' || code === 'ENOTSUP') {
          await fsp.rename(tmpPath, dest);
        } else {
          throw e;
        }
      }
      await fsp.rm(tmpPath, { force: true });
      // An alias is a cache checked when read (shaForGitOid): no fsync needed.
      if (gitOid) await writeFileAtomic(join(this.internal, 'aliases', 'git', gitOid), sha256, { durable: false });
    } catch (e) {
      throw storageError(e, dest);
    }
    return dest;
  }

  /** Mark a blob as just used, so a concurrent sweep's grace period protects it until it is linked. */
  async freshen(blob: string): Promise<void> {
    const now = new Date();
    await fsp.utimes(blob, now, now).catch(() => undefined);
  }

  // ---- views -------------------------------------------------------------------------------

  hfRepoDir(key: RepoKeyParts): string {
    return join(this.root, 'huggingface', 'hub', `models--${key.org}--${key.name}`);
  }
  msRepoDir(key: RepoKeyParts): string {
    return join(this.root, 'modelscope', 'models', `${key.org}--${key.name}`);
  }
  plainDir(key: RepoKeyParts, commit: string): string {
    return join(this.root, 'models', key.hub, key.org, key.name, commit);
  }
  private recordDir(key: RepoKeyParts): string {
    return join(this.internal, 'records', repoKey(key));
  }
  private recordPath(key: RepoKeyParts, commit: string): string {
    return join(this.recordDir(key), `${commit}.json`);
  }
  private localRefPath(key: RepoKeyParts, revision: string): string {
    return join(this.internal, 'refs', repoKey(key), encodeURIComponent(revision));
  }

  /**
   * Publish a revision whose blobs are all verified and committed. Each view appears whole:
   * a new snapshot directory is built in tmp/ and renamed into place; files added to an existing
   * snapshot (a wider --include later) appear one atomic rename at a time. Refs move last.
   */
  async publish(input: PublishInput): Promise<PublishRecord> {
    const { key, commit } = input;
    for (const f of input.files) {
      if (!(await this.hasBlob(f.sha256))) throw new StorageError(`blob ${f.sha256} of ${f.path} vanished from ${this.root} before publishing (removed by another process?)`, 'ESF_BLOB_MISSING');
      await this.freshen(this.blobPath(f.sha256));
    }
    const previous = await this.readRecord(key, commit);
    const files = mergeFiles(previous?.files ?? [], input.files.map(toRecordFile));
    try {
      const paths = this.viewPaths(key, commit);
      await this.buildTree(paths.plain, input.files, (f) => ({ kind: 'link', src: this.blobPath(f.sha256) }));
      if (key.hub === 'hf') await this.publishHf(input);
      else await this.publishMs(input);
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
      await writeFileAtomic(this.recordPath(key, commit), JSON.stringify({ ...record, paths: this.relativePaths(paths) }, null, 2));
      await this.touch(key, commit);
      if (!isCommitId(input.revision)) await writeFileAtomic(this.localRefPath(key, input.revision), commit);
      return record;
    } catch (e) {
      throw storageError(e, this.root);
    }
  }

  /** The views of one revision under this store's root (whatever root it was published under). */
  viewPaths(key: RepoKeyParts, commit: string): ViewPaths {
    const paths: ViewPaths = { plain: this.plainDir(key, commit) };
    if (key.hub === 'hf') paths.hf = join(this.hfRepoDir(key), 'snapshots', commit);
    else paths.ms = join(this.msRepoDir(key), 'snapshots', commit);
    return paths;
  }

  private relativePaths(paths: ViewPaths): ViewPaths {
    const rel = (p: string) => relative(this.root, p).split(sep).join('/');
    const out: ViewPaths = { plain: rel(paths.plain) };
    if (paths.hf) out.hf = rel(paths.hf);
    if (paths.ms) out.ms = rel(paths.ms);
    return out;
  }

  /** A record as read from disk, its view paths placed under this store's root. */
  private located(rec: PublishRecord): PublishRecord {
    return { ...rec, paths: this.viewPaths(rec, rec.commit) };
  }

  private async publishHf(input: PublishInput): Promise<void> {
    const repo = this.hfRepoDir(input.key);
    await fsp.mkdir(join(repo, 'blobs'), { recursive: true });
    for (const f of input.files) {
      await linkOrCopy(this.blobPath(f.sha256), join(repo, 'blobs', hfEtag(f)));
    }
    const snap = join(repo, 'snapshots', input.commit);
    // Relative links, exactly as huggingface_hub makes them: one more "../" per directory level.
    await this.buildTree(snap, input.files, (f) => ({
      kind: 'symlink',
      target: `${'../'.repeat(2 + f.path.split('/').length - 1)}blobs/${hfEtag(f)}`,
    }));
    if (!isCommitId(input.revision)) {
      // huggingface_hub writes refs/<rev> without a trailing newline.
      await writeFileAtomic(join(repo, 'refs', ...input.revision.split('/')), input.commit);
    }
  }

  private async publishMs(input: PublishInput): Promise<void> {
    // modelscope (modelscope_hub) reads <cache>/models/<org>--<name>/snapshots/<revision>/ offline,
    // trying the requested revision, then master/main. The commit directory holds the files; the
    // revision names are symlinks to it, swapped atomically when a branch moves.
    const snaps = join(this.msRepoDir(input.key), 'snapshots');
    const dir = join(snaps, input.commit);
    await this.buildTree(dir, input.files, (f) => ({ kind: 'link', src: this.blobPath(f.sha256) }));
    if (!isCommitId(input.revision) && !input.revision.includes('/')) {
      await symlinkAtomic(input.commit, join(snaps, input.revision));
    }
  }

  /**
   * Make `dir` contain every given file. A missing dir is built completely in tmp/ and renamed
   * into place (so it appears whole); an existing one gets each missing entry by an atomic rename.
   */
  private async buildTree(
    dir: string,
    files: readonly FileEntry[] & readonly { sha256: string }[],
    entry: (f: FileEntry & { sha256: string }) => { kind: 'link'; src: string } | { kind: 'symlink'; target: string },
  ): Promise<void> {
    const place = async (base: string, f: FileEntry & { sha256: string }, atomic: boolean) => {
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
    const stage = join(this.tmpDir, `stage-${uniqueSuffix()}`, 'snap');
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

  // ---- records and refs ---------------------------------------------------------------------

  async readRecord(key: RepoKeyParts, commit: string): Promise<PublishRecord | undefined> {
    const text = await readText(this.recordPath(key, commit));
    if (text === undefined) return undefined;
    const rec = this.located(JSON.parse(text) as PublishRecord);
    rec.lastUsedAt = await this.lastUsed(key, commit, rec.lastUsedAt);
    return rec;
  }

  /** The commit a revision name pointed at when last pulled into this store (offline lookup). */
  async localCommit(key: RepoKeyParts, revision: string): Promise<string | undefined> {
    if (isCommitId(revision)) return revision;
    const c = (await readText(this.localRefPath(key, revision)))?.trim();
    return c && isCommitId(c) ? c : undefined;
  }

  /** The record for a ref resolved against this store only; NotFoundError when it was never pulled. */
  async findRecord(key: RepoKeyParts, revision: string): Promise<PublishRecord> {
    const commit = await this.localCommit(key, revision);
    const rec = commit ? await this.readRecord(key, commit) : undefined;
    if (!rec) {
      throw new NotFoundError(`${key.hub}://${key.org}/${key.name}@${revision} is not in the store ${this.root}: pull it first`, 'ESF_NOT_IN_STORE');
    }
    return rec;
  }

  async listRecords(): Promise<PublishRecord[]> {
    const base = join(this.internal, 'records');
    const out: PublishRecord[] = [];
    let repos: string[];
    try {
      repos = await fsp.readdir(base);
    } catch {
      return out;
    }
    for (const repo of repos.sort()) {
      for (const file of (await fsp.readdir(join(base, repo)).catch(() => [] as string[])).sort()) {
        if (!file.endsWith('.json')) continue;
        const text = await readText(join(base, repo, file));
        if (!text) continue;
        const rec = this.located(JSON.parse(text) as PublishRecord);
        rec.lastUsedAt = await this.lastUsed(rec, rec.commit, rec.lastUsedAt);
        out.push(rec);
      }
    }
    return out;
  }

  /** The records of one repo only. */
  private async repoRecords(key: RepoKeyParts): Promise<PublishRecord[]> {
    const out: PublishRecord[] = [];
    for (const file of await fsp.readdir(this.recordDir(key)).catch(() => [] as string[])) {
      if (!file.endsWith('.json')) continue;
      const rec = await this.readRecord(key, file.slice(0, -'.json'.length));
      if (rec) out.push(rec);
    }
    return out;
  }

  async touch(key: RepoKeyParts, commit: string): Promise<void> {
    // A stamp for GC's LRU order; a lost or torn one falls back to the record's own time.
    await writeFileAtomic(join(this.recordDir(key), `${commit}.used`), new Date().toISOString(), { durable: false });
  }

  private async lastUsed(key: RepoKeyParts, commit: string, fallback: string): Promise<string> {
    const t = (await readText(join(this.recordDir(key), `${commit}.used`)))?.trim();
    return t && !Number.isNaN(Date.parse(t)) ? t : fallback;
  }

  /**
   * Remove one revision from every view and forget its record. Readers never see a half-removed
   * snapshot: refs go first, then each directory is renamed into trash/ before it is deleted.
   * Blobs stay; sweepBlobs() frees those no view links any more.
   */
  async removeRevision(key: RepoKeyParts, commit: string): Promise<void> {
    const rec = await this.readRecord(key, commit);
    const trash = join(this.internal, 'trash', uniqueSuffix());
    try {
      await fsp.mkdir(trash, { recursive: true });
    } catch (e) {
      throw storageError(e, this.root);
    }
    const toTrash = async (p: string) => {
      if (await exists(p)) await fsp.rename(p, join(trash, uniqueSuffix()));
    };
    try {
      await this.removeRefsTo(join(this.internal, 'refs', repoKey(key)), commit, true);
      if (key.hub === 'hf') {
        const repo = this.hfRepoDir(key);
        await this.removeRefsTo(join(repo, 'refs'), commit, false);
        await toTrash(join(repo, 'snapshots', commit));
        // Drop the HF blob names no remaining snapshot of this repo uses, so their link counts
        // fall - unless a pull of this repo is running: it may have linked a name it shares with
        // us before writing its record. A later collection removes what is left.
        const repoBusy = (await listLeases(this.leaseDir)).some((l) => !l.expired && l.name.startsWith(`${repoKey(key)}@`));
        if (!repoBusy) {
          const others = await this.repoRecords(key);
          const keep = new Set(others.filter((r) => r.commit !== commit).flatMap((r) => r.files.map((f) => hfEtag(f))));
          for (const f of rec?.files ?? []) {
            const etag = hfEtag(f);
            if (!keep.has(etag)) await fsp.rm(join(repo, 'blobs', etag), { force: true });
          }
        }
      } else {
        const snaps = join(this.msRepoDir(key), 'snapshots');
        for (const name of await fsp.readdir(snaps).catch(() => [] as string[])) {
          const p = join(snaps, name);
          const target = await fsp.readlink(p).catch(() => undefined);
          if (target === commit) await fsp.rm(p, { force: true });
        }
        await toTrash(join(snaps, commit));
      }
      await toTrash(this.plainDir(key, commit));
      await fsp.rm(this.recordPath(key, commit), { force: true });
      await fsp.rm(join(this.recordDir(key), `${commit}.used`), { force: true });
    } catch (e) {
      throw storageError(e, this.root);
    } finally {
      await fsp.rm(trash, { recursive: true, force: true });
    }
  }

  private async removeRefsTo(dir: string, commit: string, encoded: boolean): Promise<void> {
    const walk = async (d: string): Promise<void> => {
      for (const ent of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
        const p = join(d, ent.name);
        if (ent.isDirectory() && !encoded) await walk(p);
        else if (ent.isFile() && (await readText(p))?.trim() === commit) await fsp.rm(p, { force: true });
      }
    };
    await walk(dir);
  }

  /**
   * Delete blobs that nothing needs any more: no publish record lists them and no view links them
   * (link count 1: only the blob store's own name). A blob younger than the grace period is spared
   * unless the caller names it in `immediate` (blobs of revisions it has just removed): a pull or
   * an import may have committed it and be about to link it.
   */
  async sweepBlobs(opts: { graceMs?: number; immediate?: Iterable<string> } = {}): Promise<{ freedBytes: number; freedBlobs: number }> {
    const grace = opts.graceMs ?? DEFAULT_SWEEP_GRACE_MS;
    const immediate = new Set(opts.immediate ?? []);
    let freedBytes = 0;
    let freedBlobs = 0;
    try {
      // Records count even where a view holds a copy instead of a link (no hard links allowed).
      const referenced = new Set((await this.listRecords()).flatMap((r) => r.files.map((f) => f.sha256)));
      for await (const { name, path: p } of this.blobs()) {
        if (referenced.has(name)) continue;
        const st = await fsp.stat(p).catch(() => undefined);
        if (!st || st.nlink > 1) continue;
        if (!immediate.has(name) && Date.now() - st.mtimeMs < grace) continue;
        await fsp.rm(p, { force: true });
        freedBytes += st.size;
        freedBlobs++;
      }
      // Aliases (git oid -> sha256) whose blob is gone are stale.
      const aliases = join(this.internal, 'aliases', 'git');
      for (const oid of await fsp.readdir(aliases).catch(() => [] as string[])) {
        const sha = (await readText(join(aliases, oid)))?.trim();
        if (!sha || !(await this.hasBlob(sha))) await fsp.rm(join(aliases, oid), { force: true });
      }
    } catch (e) {
      throw storageError(e, this.root);
    }
    return { freedBytes, freedBlobs };
  }

  /** Every blob in the blob store: its name (the SHA-256) and path. */
  private async *blobs(): AsyncGenerator<{ name: string; path: string }> {
    const base = join(this.internal, 'blobs', 'sha256');
    for (const fan of await fsp.readdir(base).catch(() => [] as string[])) {
      for (const name of await fsp.readdir(join(base, fan)).catch(() => [] as string[])) {
        yield { name, path: join(base, fan, name) };
      }
    }
  }

  async usage(): Promise<{ usedBytes: number; freeBytes: number }> {
    let usedBytes = 0;
    for await (const { path: p } of this.blobs()) {
      const st = await fsp.stat(p).catch(() => undefined);
      if (st) usedBytes += st.size;
    }
    let freeBytes = 0;
    try {
      const s = await fsp.statfs(this.root);
      freeBytes = Number(s.bavail) * Number(s.bsize);
    } catch {
      freeBytes = 0;
    }
    return { usedBytes, freeBytes };
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
