import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import pLimit from 'p-limit';
import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import type { AddedRepo, FakeRepoFile, FakeRepoSpec, FileSet } from './types.js';

/** One file as both hubs describe it. Hashed once when the repo is added. */
export interface FileEntry {
  path: string;
  size: number;
  sha256: string;
  /** Git blob id of the content. */
  contentOid: string;
  /** What HF lists as `oid`/`blobId`: the content's id, or the LFS pointer's id for LFS files. */
  listedOid: string;
  lfs: boolean;
  pointerSize: number;
  buffer?: Buffer;
  file?: string;
}

export interface Revision {
  commit: string;
  files: Map<string, FileEntry>;
  /** Sorted paths. */
  paths: string[];
  /** Every directory that holds a file, sorted. */
  dirs: string[];
  createdAt: number;
}

export interface Repo {
  id: string;
  org: string;
  name: string;
  hf: boolean;
  ms: boolean;
  gatedToken?: string;
  extraListing: Array<{ path: string; size?: number }>;
  /** Branch name -> revision. HF sees `main` + extra branches, ModelScope `master` + extra branches. */
  hfBranches: Map<string, Revision>;
  msBranches: Map<string, Revision>;
  tags: Map<string, Revision>;
  byCommit: Map<string, Revision>;
  defaultCommit: string;
}

const ALWAYS_LFS = /\.(safetensors|bin)$/;

export function sha1(s: string | Buffer): string {
  return createHash('sha1').update(s).digest('hex');
}

function lfsPointer(sha256: string, size: number): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`;
}

async function hashFile(file: string): Promise<{ size: number; sha256: string; contentOid: string }> {
  const { size } = await stat(file);
  const s256 = createHash('sha256');
  const s1 = createHash('sha1').update(`blob ${size}\0`);
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    s256.update(chunk as Buffer);
    s1.update(chunk as Buffer);
  }
  return { size, sha256: s256.digest('hex'), contentOid: s1.digest('hex') };
}

function normaliseFiles(set: FileSet): FakeRepoFile[] {
  if (Array.isArray(set)) return set;
  return Object.entries(set).map(([path, content]) => ({ path, content }));
}

async function buildEntry(f: FakeRepoFile, lfsThreshold: number): Promise<FileEntry> {
  let size: number;
  let sha256: string;
  let contentOid: string;
  let buffer: Buffer | undefined;
  if (f.file !== undefined) {
    ({ size, sha256, contentOid } = await hashFile(f.file));
  } else {
    buffer = typeof f.content === 'string' ? Buffer.from(f.content) : (f.content ?? Buffer.alloc(0));
    size = buffer.length;
    sha256 = createHash('sha256').update(buffer).digest('hex');
    contentOid = createHash('sha1').update(`blob ${size}\0`).update(buffer).digest('hex');
  }
  const lfs = size >= lfsThreshold || ALWAYS_LFS.test(f.path);
  const pointer = lfsPointer(sha256, size);
  const entry: FileEntry = {
    path: f.path,
    size,
    sha256,
    contentOid,
    listedOid: lfs ? sha1(Buffer.concat([Buffer.from(`blob ${Buffer.byteLength(pointer)}\0`), Buffer.from(pointer)])) : contentOid,
    lfs,
    pointerSize: Buffer.byteLength(pointer),
  };
  if (buffer) entry.buffer = buffer;
  if (f.file !== undefined) entry.file = f.file;
  return entry;
}

async function buildRevision(set: FileSet, lfsThreshold: number, salt: string): Promise<Revision> {
  // A few files hashed at a time: a repo of 20,000 files must not open 20,000 descriptors at once.
  const limit = pLimit(32);
  const entries = await Promise.all(normaliseFiles(set).map((f) => limit(() => buildEntry(f, lfsThreshold))));
  const files = new Map<string, FileEntry>();
  for (const e of entries) {
    if (files.has(e.path)) throw new Error(`fake hub: duplicate path ${e.path}`);
    files.set(e.path, e);
  }
  const paths = [...files.keys()].sort();
  const dirSet = new Set<string>();
  for (const p of paths) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) dirSet.add(parts.slice(0, i).join('/'));
  }
  // Deterministic: same files (and salt) give the same commit, across runs and processes.
  const commit = sha1(`${salt}\n${paths.map((p) => `${p}\0${files.get(p)!.sha256}`).join('\n')}`);
  return { commit, files, paths, dirs: [...dirSet].sort(), createdAt: 1_700_000_000 };
}

export async function buildRepo(spec: FakeRepoSpec): Promise<Repo> {
  const parts = spec.id.split('/');
  if (parts.length !== 2 || !parts[0] || !parts[1]) throw new Error(`fake hub: repo id must be org/name, got ${spec.id}`);
  const lfsThreshold = spec.lfsThreshold ?? 1024 * 1024;
  const hub = spec.hub ?? 'both';
  const main = await buildRevision(spec.files, lfsThreshold, `default\0${spec.id}`);
  const repo: Repo = {
    id: spec.id,
    org: parts[0],
    name: parts[1],
    hf: hub !== 'ms',
    ms: hub !== 'hf',
    extraListing: spec.extraListing ?? [],
    hfBranches: new Map([['main', main]]),
    msBranches: new Map([['master', main]]),
    tags: new Map(),
    byCommit: new Map([[main.commit, main]]),
    defaultCommit: main.commit,
  };
  if (spec.gated) repo.gatedToken = spec.gated.token;
  for (const [branch, set] of Object.entries(spec.branches ?? {})) {
    const rev = await buildRevision(set, lfsThreshold, `branch\0${spec.id}\0${branch}`);
    repo.hfBranches.set(branch, rev);
    repo.msBranches.set(branch, rev);
    repo.byCommit.set(rev.commit, rev);
  }
  for (const [tag, target] of Object.entries(spec.tags ?? {})) {
    const rev = repo.hfBranches.get(target) ?? repo.msBranches.get(target) ?? repo.byCommit.get(target);
    if (!rev) throw new Error(`fake hub: tag ${tag} points to unknown branch or commit ${target}`);
    repo.tags.set(tag, rev);
  }
  return repo;
}

export function describeRepo(repo: Repo): AddedRepo {
  const main = repo.byCommit.get(repo.defaultCommit)!;
  const branchCommits: Record<string, string> = {};
  for (const [b, r] of repo.hfBranches) branchCommits[b] = r.commit;
  for (const [b, r] of repo.msBranches) branchCommits[b] = r.commit;
  for (const [t, r] of repo.tags) branchCommits[t] = r.commit;
  return {
    id: repo.id,
    commit: repo.defaultCommit,
    branchCommits,
    files: main.paths.map((p) => {
      const f = main.files.get(p)!;
      return { path: f.path, size: f.size, sha256: f.sha256, gitOid: f.listedOid, lfs: f.lfs };
    }),
  };
}

/** Branch, tag or full commit id -> revision, as the given hub sees the repo. */
export function resolveRevision(repo: Repo, hub: 'hf' | 'ms', rev: string): Revision | undefined {
  const branches = hub === 'hf' ? repo.hfBranches : repo.msBranches;
  return branches.get(rev) ?? repo.tags.get(rev) ?? (/^[0-9a-f]{40}$/.test(rev) ? repo.byCommit.get(rev) : undefined);
}

/** Every regular file under dir, as streamed file entries with '/'-separated repo paths. */
export async function filesFromDir(dir: string): Promise<FakeRepoFile[]> {
  const out: FakeRepoFile[] = [];
  async function walk(d: string): Promise<void> {
    const entries = await readdir(d, { withFileTypes: true });
    for (const e of entries) {
      if (e.name === '.git') continue;
      const abs = join(d, e.name);
      if (e.isDirectory()) await walk(abs);
      else if (e.isFile()) out.push({ path: relative(dir, abs).split(sep).join('/'), file: abs });
    }
  }
  await walk(dir);
  return out;
}
