import { link, mkdir, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { NetworkError, StorageError } from '../core/errors.js';
import { totalBytes, type FileEntry, type Manifest } from '../core/manifest.js';
import { formatRef, parseRef, repoKey, type ModelRef } from '../core/ref.js';
import { selectFiles } from '../core/select.js';
import { blobFileStem, blobKeyOf, formatBlobKey } from '../core/blob-key.js';
import type { BlobRequest, ByteSource, TransferEvent } from '../core/transfer.js';
import { sourceFor } from '../sources/index.js';
import { sleep } from '../core/sleep.js';
import { readLease, tryAcquireLease, type Lease } from '../store/lease.js';
import { storageError } from '../store/fsutil.js';
import { Store, type PublishRecord } from '../store/store.js';
import type { RateLimiter } from '../core/rate-limiter.js';
import { fetchBlobs, forgetBlobs, proxyAwareDispatcher, type EngineHooks } from '../transfer/index.js';

export interface PullOptions {
  store: string;
  stateDir: string;
  include?: string[];
  exclude?: string[];
  connections?: number;
  chunkSize?: number;
  limiter?: RateLimiter;
  /** P2P: places chunks may come from before the origin, and the engine events the peer side follows. */
  engineHooks?: EngineHooks;
  /** A connection that delivers nothing this long is replaced. */
  stallTimeoutMs?: number;
  /** Make every fetched file durable on disk before it is published (the daemon does). */
  fsync?: boolean;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  onEvent?: (e: PullEvent) => void;
  logger?: Logger;
  /** Lease holder id; defaults to host:pid. */
  holder?: string;
  leaseTtlMs?: number;
  /** How often a waiter looks for the holder's publish. */
  pollMs?: number;
}

export type PullEvent =
  | { type: 'resolved'; ref: string; commit: string; files: number; bytesTotal: number }
  | { type: 'waiting'; holder: string }
  | { type: 'progress'; bytesDone: number; bytesTotal: number; source: ByteSource }
  | { type: 'retry'; file: string; attempt: number; delayMs: number; reason: string }
  | { type: 'file-verified'; file: string; size: number }
  | { type: 'verifying' }
  | { type: 'published'; path: string; commit: string };

export interface PullResult {
  ref: ModelRef;
  commit: string;
  /** The plain view directory (what `swift-fetch path` prints). */
  path: string;
  record: PublishRecord;
  bytesDownloaded: number;
  alreadyComplete: boolean;
}

/** Files of `record` hold every selected file of the manifest, with the same content. */
function recordHolds(record: PublishRecord | undefined, files: readonly FileEntry[]): boolean {
  if (!record) return false;
  const have = new Map(record.files.map((f) => [f.path, f]));
  return files.every((f) => {
    const h = have.get(f.path);
    return h !== undefined && h.size === f.size && (!f.sha256 || f.sha256 === h.sha256) && (!f.gitOid || !h.gitOid || f.gitOid === h.gitOid);
  });
}

/**
 * Resolve a ref to a commit, fetch what the store lacks, verify it, publish all views.
 * Several processes (on several nodes) pulling the same revision into one store coordinate through
 * a lease file: one downloads, the others wait for its publish record and then return.
 */
export async function pullModel(refOrString: ModelRef | string, opts: PullOptions): Promise<PullResult> {
  const env = opts.env ?? process.env;
  const ref = typeof refOrString === 'string' ? parseRef(refOrString, env) : refOrString;
  const log = opts.logger?.child({ module: 'pull', ref: formatRef(ref) });
  const store = new Store(opts.store);
  // Hub API calls (listings): a few connections, through the same proxies as the downloads.
  const dispatcher = proxyAwareDispatcher(env, { connections: 4, headersTimeout: 60_000, bodyTimeout: 60_000 });
  try {
    const source = sourceFor(ref.hub, env, dispatcher);
    let manifest: Manifest;
    try {
      manifest = await source.resolve(ref, opts.signal);
    } catch (e) {
      // Offline with the model already here: serve what the store has for this revision.
      if (e instanceof NetworkError && e.code === 'ESF_NETWORK') {
        const commit = await store.localCommit(ref, ref.revision);
        const rec = commit ? await store.replaceableRecord(ref, commit) : undefined;
        if (rec) {
          log?.warn({ err: e.message }, 'hub unreachable; using the revision already in the store');
          return done(ref, rec, 0, true, opts);
        }
      }
      throw e;
    }
    // Only now, with a validated listing in hand, touch the store.
    await store.init();
    const files = selectFiles(manifest.files, opts.include, opts.exclude);
    const complete = files.length === manifest.files.length;
    const bytesTotal = totalBytes(files);
    opts.onEvent?.({ type: 'resolved', ref: formatRef(ref), commit: manifest.commit, files: files.length, bytesTotal });
    log?.info({ commit: manifest.commit, files: files.length, bytes: bytesTotal }, 'resolved');

    const existing = await store.replaceableRecord(ref, manifest.commit);
    if (recordHolds(existing, files)) {
      // Record the revision name too (a new branch may point at a commit we already have).
      const rec = await publishFrom(store, manifest, files, existing!, complete);
      return done(ref, rec, 0, true, opts);
    }

    const leaseName = `${repoKey(ref)}@${manifest.commit}`;
    const holder = opts.holder ?? `${hostname()}:${process.pid}`;
    // Losing a lease (a stalled heartbeat, a store we cannot write) means another process may be
    // writing the same files now: stop, rather than race it.
    const lost = new AbortController();
    const onLost = () => {
      log?.warn('download lease lost; stopping so the process that took it over can finish');
      lost.abort(new StorageError(`lost the download lease for ${formatRef(ref)} in ${store.leaseDir}; another process took it over`, 'ESF_LEASE_LOST'));
    };
    const signal = opts.signal ? AbortSignal.any([opts.signal, lost.signal]) : lost.signal;
    let lease: Lease | undefined;
    for (;;) {
      opts.signal?.throwIfAborted();
      const rec = await store.replaceableRecord(ref, manifest.commit);
      if (recordHolds(rec, files)) {
        const published = await publishFrom(store, manifest, files, rec!, complete);
        return done(ref, published, 0, true, opts);
      }
      lease = await tryAcquireLease(store.leaseDir, leaseName, {
        holder,
        ttlMs: opts.leaseTtlMs,
        onLost,
      });
      if (lease) break;
      const info = await readLease(store.leaseDir, leaseName);
      opts.onEvent?.({ type: 'waiting', holder: info?.holder ?? 'unknown' });
      await sleep(opts.pollMs ?? 500, opts.signal);
    }

    // Every blob this revision uses gets a second link here until it is published, so no sweep
    // (GC evicting an older revision that shared it) can take it away mid-pull.
    const pins = join(store.partialDir, `pin-${holder.replace(/[^A-Za-z0-9.-]/g, '_')}-${process.hrtime.bigint()}`);
    try {
      const { shas, downloaded } = await fetchMissing(store, source, manifest, files, { ...opts, signal }, bytesTotal, holder, onLost, pins).catch((e: unknown) => {
        throw lost.signal.aborted ? lost.signal.reason : e;
      });
      signal.throwIfAborted();
      opts.onEvent?.({ type: 'verifying' });
      const rec = await store.publish({
        key: ref,
        commit: manifest.commit,
        revision: ref.revision,
        files: files.map((f) => ({ ...f, sha256: shas.get(f.path)!, verified: Boolean(f.sha256 || f.gitOid) })),
        complete,
      });
      const unverified = rec.files.filter((f) => !f.verified).map((f) => f.path);
      if (unverified.length > 0) log?.warn({ files: unverified }, 'the hub gave no hash for these files: stored unverified');
      return done(ref, rec, downloaded, false, opts);
    } finally {
      await rm(pins, { recursive: true, force: true });
      await lease.release();
    }
  } finally {
    await dispatcher.close().catch(() => undefined);
  }
}

async function publishFrom(store: Store, manifest: Manifest, files: FileEntry[], rec: PublishRecord, complete: boolean): Promise<PublishRecord> {
  const byPath = new Map(rec.files.map((f) => [f.path, f]));
  return store.publish({
    key: manifest.ref,
    commit: manifest.commit,
    revision: manifest.ref.revision,
    files: files.map((f) => ({ ...f, sha256: byPath.get(f.path)!.sha256, verified: byPath.get(f.path)!.verified })),
    complete,
  });
}

function done(ref: ModelRef, rec: PublishRecord, bytesDownloaded: number, alreadyComplete: boolean, opts: PullOptions): PullResult {
  opts.onEvent?.({ type: 'published', path: rec.paths.plain, commit: rec.commit });
  return { ref, commit: rec.commit, path: rec.paths.plain, record: rec, bytesDownloaded, alreadyComplete };
}

/** Fetch every selected file whose content the blob store lacks; returns path -> sha256 for all. */
async function fetchMissing(
  store: Store,
  source: ReturnType<typeof sourceFor>,
  manifest: Manifest,
  files: FileEntry[],
  opts: PullOptions,
  bytesTotal: number,
  holder: string,
  onLost: () => void,
  pins: string,
): Promise<{ shas: Map<string, string>; downloaded: number }> {
  const shas = new Map<string, string>();
  const requests = new Map<string, BlobRequest>();
  /** Link a stored blob into this pull's pin folder; false when it is no longer there. */
  const pin = async (sha: string): Promise<boolean> => {
    await mkdir(pins, { recursive: true });
    try {
      await link(store.blobPath(sha), join(pins, sha));
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return true;
      if (code === 'ENOENT') return false;
      throw storageError(e, store.root);
    }
  };
  const pathsByKey = new Map<string, string[]>();
  let present = 0;
  for (const f of files) {
    const known = f.sha256 && (await store.hasBlob(f.sha256)) ? f.sha256 : f.gitOid && !f.sha256 ? await store.shaForGitOid(f.gitOid) : undefined;
    if (known && (await pin(known))) {
      shas.set(f.path, known);
      present += f.size;
      continue;
    }
    // A file the hub gives no hash for is keyed by its place in the commit: fetched, never deduplicated.
    const key = blobKeyOf(f, manifest.commit);
    const id = formatBlobKey(key);
    (pathsByKey.get(id) ?? pathsByKey.set(id, []).get(id)!).push(f.path);
    if (requests.has(id)) continue;
    const req: BlobRequest = { key, label: f.path, size: f.size, origin: source.origin(manifest, f) };
    if (f.sha256) req.sha256 = f.sha256;
    if (f.gitOid) req.gitOid = f.gitOid;
    requests.set(id, req);
  }

  let done = present;
  let downloaded = 0;
  let lastEmit = 0;
  const gitOids = new Map([...requests.entries()].map(([id, r]) => [id, r.gitOid]));
  const onTransfer = (e: TransferEvent) => {
    if (e.type === 'progress') {
      done += e.bytes;
      downloaded += e.bytes;
      const now = Date.now();
      if (now - lastEmit >= 250 || done === bytesTotal) {
        lastEmit = now;
        opts.onEvent?.({ type: 'progress', bytesDone: done, bytesTotal, source: e.source });
      }
    } else if (e.type === 'retry') {
      opts.onEvent?.({ type: 'retry', file: e.label, attempt: e.attempt, delayMs: e.delayMs, reason: e.reason });
    } else if (e.type === 'blob-verified') {
      opts.onEvent?.({ type: 'file-verified', file: e.label, size: e.size });
    }
  };
  opts.onEvent?.({ type: 'progress', bytesDone: done, bytesTotal, source: 'origin' });

  const fetchAndCommit = async (reqs: BlobRequest[]) => {
    if (reqs.length === 0) return;
    const fetched = await fetchBlobs(reqs, {
      partialDir: store.partialDir,
      stateDir: opts.stateDir,
      connections: opts.connections,
      chunkSize: opts.chunkSize,
      limiter: opts.limiter,
      signal: opts.signal,
      onEvent: (e) => {
        opts.engineHooks?.onEvent?.(e);
        onTransfer(e);
      },
      onChunk: opts.engineHooks?.onChunk,
      stallTimeoutMs: opts.stallTimeoutMs,
      fsync: opts.fsync,
      env: opts.env,
      storeLabel: store.root,
      chunkSources: opts.engineHooks?.chunkSources,
    });
    for (const b of fetched) {
      const id = formatBlobKey(b.key);
      await store.commitBlob(b.path, b.sha256, gitOids.get(id));
      await pin(b.sha256);
      for (const p of pathsByKey.get(id) ?? []) shas.set(p, b.sha256);
    }
    forgetBlobs(fetched.map((b) => b.key), { stateDir: opts.stateDir });
  };

  // Partial files live in the (possibly shared) store, named by blob. Two pulls of different
  // revisions that share content, on this node or another, must not write one partial file at
  // once: each blob is fetched under its own lease, and blobs someone else is fetching are awaited.
  const blobLease = (r: BlobRequest) => tryAcquireLease(store.leaseDir, `blob-${blobFileStem(r.key)}`, { holder, ttlMs: opts.leaseTtlMs, onLost });
  const mine: BlobRequest[] = [];
  const leases: Lease[] = [];
  let theirs: BlobRequest[] = [];
  for (const r of requests.values()) {
    // Unhashed files are keyed by revision and path: the revision lease already covers them.
    const lease = r.key.kind === 'path' ? undefined : await blobLease(r);
    // Committed by someone else between our look and our lease: nothing to fetch.
    const landed = lease ? (r.sha256 ?? (r.gitOid ? await store.shaForGitOid(r.gitOid) : undefined)) : undefined;
    if (lease && landed && (await pin(landed))) {
      for (const p of pathsByKey.get(formatBlobKey(r.key)) ?? []) shas.set(p, landed);
      done += r.size;
      await lease.release();
      continue;
    }
    if (lease || r.key.kind === 'path') {
      mine.push(r);
      if (lease) leases.push(lease);
    } else {
      theirs.push(r);
    }
  }
  try {
    await fetchAndCommit(mine);
  } finally {
    await Promise.all(leases.map((l) => l.release()));
  }
  while (theirs.length > 0) {
    const still: BlobRequest[] = [];
    for (const r of theirs) {
      const sha = r.sha256 ?? (r.gitOid ? await store.shaForGitOid(r.gitOid) : undefined);
      if (sha && (await pin(sha))) {
        for (const p of pathsByKey.get(formatBlobKey(r.key)) ?? []) shas.set(p, sha);
        done += r.size;
        opts.onEvent?.({ type: 'progress', bytesDone: done, bytesTotal, source: 'origin' });
        continue;
      }
      const lease = await blobLease(r);
      if (!lease) {
        still.push(r);
        continue;
      }
      try {
        await fetchAndCommit([r]);
      } finally {
        await lease.release();
      }
    }
    theirs = still;
    if (theirs.length > 0) {
      opts.onEvent?.({ type: 'waiting', holder: 'another pull fetching shared content' });
      await sleep(opts.pollMs ?? 500, opts.signal);
    }
  }
  return { shas, downloaded };
}
