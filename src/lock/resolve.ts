/**
 * Locking against a hub: resolve a ref to its commit and the SHA-256 of every selected file, and
 * check a lock entry against what the hub serves now. Only lock needs to fetch anything: HF lists
 * small (non-LFS) files by git blob id only, and ModelScope lists some files with no hash at all,
 * so their SHA-256 comes from the store when it holds them, or from fetching them once (verified
 * against the git blob id where there is one) into a private folder that is removed afterwards.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { blobKeyOf, formatBlobKey } from '../core/blob-key.js';
import { NotFoundError } from '../core/errors.js';
import type { FileEntry, Manifest } from '../core/manifest.js';
import { formatRef, type ModelRef } from '../core/ref.js';
import type { BlobRequest } from '../core/transfer.js';
import { selectFiles } from '../core/select.js';
import { sourceFor, type Source } from '../sources/index.js';
import { Store } from '../store/store.js';
import { fetchBlobs, proxyAwareDispatcher } from '../transfer/index.js';
import { publicEndpoint, type LockedFile, type LockedModel } from './format.js';
import { listingDifferences, type LockDifference } from './pin.js';

export interface ResolveOptions {
  env?: NodeJS.ProcessEnv;
  /** A store to take known SHA-256s from (read only; it need not exist). */
  store?: string;
  signal?: AbortSignal;
  logger?: Logger;
  connections?: number;
}

/** A hub's listing of one ref, with the source that made it (its endpoint, its origins). */
async function withSource<T>(ref: ModelRef, opts: ResolveOptions, fn: (source: Source) => Promise<T>): Promise<T> {
  const env = opts.env ?? process.env;
  const dispatcher = proxyAwareDispatcher(env, { connections: 4, headersTimeout: 60_000, bodyTimeout: 60_000 });
  try {
    return await fn(await sourceFor(ref.hub, env, dispatcher));
  } finally {
    await dispatcher.close().catch(() => undefined);
  }
}

/** Resolve `ref` now and describe its selected files at the resolved commit. */
export async function lockModel(ref: ModelRef, select: { include?: string[]; exclude?: string[] }, opts: ResolveOptions): Promise<LockedModel> {
  return withSource(ref, opts, async (source) => {
    const manifest = await source.resolve(ref, opts.signal);
    const files = selectFiles(manifest.files, select.include, select.exclude);
    if (files.length === 0) {
      throw new NotFoundError(`no file of ${formatRef(ref)} (${manifest.files.length} files at ${manifest.commit.slice(0, 12)}) is selected by the given --include/--exclude`, 'ESF_NO_FILE_SELECTED');
    }
    const shas = await sha256sOf(files, manifest, source, opts);
    const locked: LockedModel = {
      ref: formatRef(ref),
      hub: ref.hub,
      endpoint: publicEndpoint(source.endpoint),
      commit: manifest.commit,
      files: files.map((f) => {
        const out: LockedFile = { path: f.path, size: f.size, sha256: shas.get(f.path)! };
        if (f.gitOid) out.gitOid = f.gitOid;
        return out;
      }),
    };
    if (select.include?.length) locked.include = select.include;
    if (select.exclude?.length) locked.exclude = select.exclude;
    return locked;
  });
}

/** Where a locked ref stands at the hub now. */
export type CheckResult =
  | { state: 'ok'; commit: string }
  | { state: 'moved'; commit: string }
  | { state: 'changed'; commit: string; differences: LockDifference[] };

/**
 * Resolve the locked ref again. `moved`: the revision names another commit now. `changed`: the
 * same commit, but listed with other files, sizes or hashes than the lock holds (a tampered lock,
 * or a hub that rewrote history). Nothing is downloaded.
 */
export async function checkModel(pin: LockedModel, ref: ModelRef, opts: ResolveOptions): Promise<CheckResult> {
  return withSource(ref, opts, async (source) => {
    const manifest = await source.resolve(ref, opts.signal);
    if (manifest.commit !== pin.commit) return { state: 'moved', commit: manifest.commit };
    const differences = listingDifferences(pin, manifest);
    return differences.length > 0 ? { state: 'changed', commit: manifest.commit, differences } : { state: 'ok', commit: manifest.commit };
  });
}

/** path -> SHA-256 for every file: the hub's, else the store's, else hashed from a fetch. */
async function sha256sOf(files: FileEntry[], manifest: Manifest, source: Source, opts: ResolveOptions): Promise<Map<string, string>> {
  const shas = new Map<string, string>();
  const missing: FileEntry[] = [];
  const store = opts.store ? new Store(opts.store) : undefined;
  const record = await store?.readRecord(manifest.ref, manifest.commit).catch(() => undefined);
  const recorded = new Map((record?.files ?? []).map((f) => [f.path, f]));
  for (const f of files) {
    if (f.sha256) {
      shas.set(f.path, f.sha256);
      continue;
    }
    // The store's record and git-oid aliases only hold content that was verified when it was stored.
    const r = recorded.get(f.path);
    const known = r && r.size === f.size && (!f.gitOid || r.gitOid === f.gitOid) ? r.sha256 : f.gitOid ? await store?.shaForGitOid(f.gitOid) : undefined;
    if (known) shas.set(f.path, known);
    else missing.push(f);
  }
  if (missing.length === 0) return shas;
  opts.logger?.child({ module: 'lock' }).info({ ref: formatRef(manifest.ref), files: missing.length }, 'hashing files the hub lists without a SHA-256');
  // One request per distinct blob (two paths may hold the same content).
  const requests = new Map<string, BlobRequest>();
  for (const f of missing) {
    const key = blobKeyOf(f, manifest.commit);
    requests.set(formatBlobKey(key), { key, label: f.path, size: f.size, origin: source.origin(manifest, f), ...(f.gitOid ? { gitOid: f.gitOid } : {}) });
  }
  const work = await mkdtemp(join(tmpdir(), 'swift-fetch-lock-'));
  try {
    const fetched = await fetchBlobs([...requests.values()], {
      partialDir: join(work, 'partial'), stateDir: join(work, 'state'), connections: opts.connections, signal: opts.signal, env: opts.env, storeLabel: work,
    });
    const byKey = new Map(fetched.map((b) => [formatBlobKey(b.key), b.sha256]));
    for (const f of missing) shas.set(f.path, byKey.get(formatBlobKey(blobKeyOf(f, manifest.commit)))!);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return shas;
}
