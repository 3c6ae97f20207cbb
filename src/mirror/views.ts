/**
 * The JSON both hub protocols answer with, built from a pinned manifest: the HF tree listing
 * (paginated) and model info, the ModelScope file list, revisions and envelopes. Built here rather
 * than relayed so that what a client lists is exactly what this node serves (no `xetHash` that
 * would switch new clients to a protocol we do not speak) and so that it still works offline.
 * Pure: no I/O.
 */
import { createHash } from 'node:crypto';
import type { FileEntry, Manifest } from '../core/manifest.js';

type Json = Record<string, unknown>;

function sha1(s: string): string {
  return createHash('sha1').update(s).digest('hex');
}

/** Size of the git-lfs pointer file the ModelHub stores for an LFS file (its tree entry reports it). */
export function lfsPointerSize(sha256: string, size: number): number {
  return Buffer.byteLength(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`);
}

/** Every folder that holds a file, sorted. */
export function directories(files: readonly FileEntry[]): string[] {
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.path.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  return [...dirs].sort();
}

function inScope(path: string, under: string, recursive: boolean): boolean {
  const prefix = under ? `${under}/` : '';
  return path.startsWith(prefix) && (recursive || !path.slice(prefix.length).includes('/'));
}

/** HF `tree/{rev}/{under}` entries, or undefined when `under` is not a folder of the revision. */
export function hfTreeEntries(m: Manifest, under: string, recursive: boolean): Json[] | undefined {
  const dirs = directories(m.files);
  if (under && !dirs.includes(under)) return undefined;
  const items: Array<{ key: string; value: Json }> = [];
  for (const d of dirs) {
    if (inScope(d, under, recursive)) items.push({ key: d, value: { type: 'directory', oid: sha1(`tree\0${m.commit}\0${d}`), size: 0, path: d } });
  }
  for (const f of m.files) {
    if (!inScope(f.path, under, recursive)) continue;
    const value: Json = { type: 'file', oid: f.gitOid ?? sha1(`blob\0${f.sha256 ?? f.path}`), size: f.size, path: f.path };
    if (f.lfs && f.sha256) value.lfs = { oid: f.sha256, size: f.size, pointerSize: lfsPointerSize(f.sha256, f.size) };
    items.push({ key: f.path, value });
  }
  items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return items.map((i) => i.value);
}

/** One page of a listing; `cursor` is the opaque offset a previous page's `next` handed out. */
export function page<T>(items: readonly T[], cursor: string | null, size: number): { items: T[]; next: string | undefined } {
  const start = cursor ? Number.parseInt(Buffer.from(cursor, 'base64url').toString(), 10) || 0 : 0;
  const end = start + Math.max(1, size);
  return { items: items.slice(start, end), next: end < items.length ? Buffer.from(String(end)).toString('base64url') : undefined };
}

/** HF model info for a revision known only from this node (the hub is unreachable). */
export function hfModelInfo(id: string, m: Manifest, opts: { blobs: boolean; expand: string[]; publishedAt?: string }): Json {
  const siblings = m.files.map((f) =>
    opts.blobs
      ? { rfilename: f.path, size: f.size, blobId: f.gitOid, ...(f.lfs && f.sha256 ? { lfs: { size: f.size, sha256: f.sha256, pointerSize: lfsPointerSize(f.sha256, f.size) } } : {}) }
      : { rfilename: f.path },
  );
  const [org] = id.split('/');
  const when = opts.publishedAt ?? new Date(0).toISOString();
  const full: Json = {
    _id: sha1(id).slice(0, 24), id, modelId: id, author: org, sha: m.commit, lastModified: when, createdAt: when,
    private: false, gated: false, disabled: false, downloads: 0, likes: 0, tags: [], siblings,
    usedStorage: m.files.reduce((n, f) => n + f.size, 0),
  };
  if (opts.expand.length === 0) return full;
  const only: Json = { _id: full._id, id };
  for (const k of opts.expand) if (k in full) only[k] = full[k];
  return only;
}

/** ModelScope envelope around a successful answer. */
export function msOk(data: unknown): Json {
  return { Code: 200, Success: true, Message: 'success', RequestId: randomId(), Data: data };
}

/** ModelScope envelope of a failure (its own codes: 10010205 for "does not exist"). */
export function msError(code: number, message: string): Json {
  return { Code: code, Success: false, Message: message, RequestId: randomId(), Data: null };
}

function randomId(): string {
  return createHash('sha1').update(`${process.hrtime.bigint()}`).digest('hex').slice(0, 32);
}

/** ModelScope `repo/files` rows (folders as `tree` rows, like the hub), or undefined when `root` is no folder. */
export function msFileRows(m: Manifest, root: string, recursive: boolean, createdAt: number): Json[] | undefined {
  const dirs = directories(m.files);
  if (root && !dirs.includes(root)) return undefined;
  const row = (path: string, type: 'blob' | 'tree', f?: FileEntry): Json => ({
    Id: f?.gitOid ?? sha1(`${type}\0${m.commit}\0${path}`),
    Name: path.split('/').pop(),
    Path: path,
    Type: type,
    Size: f?.size ?? 0,
    Sha256: f?.sha256 ?? '',
    IsLFS: f?.lfs ?? false,
    Mode: type === 'tree' ? '040000' : '100644',
    Revision: m.commit,
    CommitId: m.commit,
    CommittedDate: createdAt,
  });
  const out: Json[] = [];
  for (const d of dirs) if (inScope(d, root, recursive)) out.push(row(d, 'tree'));
  for (const f of m.files) if (inScope(f.path, root, recursive)) out.push(row(f.path, 'blob', f));
  return out.sort((a, b) => (String(a.Path) < String(b.Path) ? -1 : 1));
}

/** ModelScope revisions from what this node knows (branch or tag name -> commit). */
export function msRevisions(names: ReadonlyMap<string, string>, createdAt: number): Json {
  const entry = ([name, commit]: [string, string]) => ({ Revision: name, CreatedAt: createdAt, CommitId: commit, Message: '' });
  return { RevisionMap: { Branches: [...names].map(entry), Tags: [] } };
}

/** ModelScope model info for a repo known only from this node. */
export function msModelInfo(id: string, createdAt: number): Json {
  const [org, name] = id.split('/');
  return { Name: name, Path: org, ChineseName: '', Description: '', CreatedTime: createdAt, LastUpdatedTime: createdAt, Revision: 'master', Tasks: [] };
}
