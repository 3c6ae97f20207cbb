/**
 * Getting every selected file of a revision into the blob store: what is there already is only
 * pinned; the rest is fetched by the transfer engine, each blob under its own lease so that pulls
 * of other revisions sharing it (on this node or another one on the same volume) fetch it once.
 */
import { link, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { blobFileStem, blobKeyOf, formatBlobKey, type BlobKey } from '../core/blob-key.js';
import type { FileEntry, Manifest } from '../core/manifest.js';
import { sleep } from '../core/sleep.js';
import type { BlobRequest, ByteSource, TransferEvent } from '../core/transfer.js';
import type { Source } from '../sources/index.js';
import { storageError } from '../store/fsutil.js';
import { tryAcquireLease, type Lease } from '../store/lease.js';
import type { Store } from '../store/store.js';
import { fetchBlobs, forgetBlobs } from '../transfer/index.js';
import type { PullOptions } from './types.js';

export interface FetchMissingOptions {
  store: Store;
  source: Source;
  manifest: Manifest;
  /** The selected files. */
  files: readonly FileEntry[];
  /** This pull's folder of extra links to every blob it uses (see pinDir in index.ts). */
  pinDir: string;
  /** Lease holder id, and what to do when a blob lease is lost. */
  holder: string;
  onLost: () => void;
  /** Aborts on the caller's signal and on a lost lease. */
  signal: AbortSignal;
  /** The pull's options: engine tuning, events, lease ttl, poll interval. */
  pull: PullOptions;
}

/** Fetch every selected file whose content the blob store lacks; returns path -> sha256 for all, and the bytes moved. */
export async function fetchMissing(o: FetchMissingOptions): Promise<{ shas: Map<string, string>; downloaded: number }> {
  const landing = new Landing(o.store, o.pinDir);
  const progress = new Progress(o.files, o.pull.onEvent);
  const requests = await landing.plan(o.files, o.manifest, o.source, progress);
  progress.emit('origin');
  const { mine, leases, theirs } = await claimBlobs(o, landing, progress, requests);
  try {
    await fetchAndCommit(o, landing, progress, mine);
  } finally {
    await Promise.all(leases.map((l) => l.release()));
  }
  await awaitOthers(o, landing, progress, theirs);
  return { shas: landing.shas, downloaded: progress.downloaded };
}

/**
 * What this pull holds of each file: the blob it has pinned for it. Pinning (a hard link in the
 * pin folder) keeps a blob from being swept by a GC that evicts another revision sharing it.
 */
class Landing {
  /** Repo path -> SHA-256 of its content, for every file landed so far. */
  readonly shas = new Map<string, string>();
  private readonly pathsByKey = new Map<string, string[]>();

  constructor(
    private readonly store: Store,
    private readonly pinDir: string,
  ) {}

  /** Requests for the files whose content is not in the store yet (one per distinct blob); lands the others. */
  async plan(files: readonly FileEntry[], manifest: Manifest, source: Source, progress: Progress): Promise<BlobRequest[]> {
    const requests = new Map<string, BlobRequest>();
    for (const f of files) {
      // A file the hub gives no hash for is keyed by its place in the commit: fetched, never deduplicated.
      const key = blobKeyOf(f, manifest.commit);
      const id = formatBlobKey(key);
      (this.pathsByKey.get(id) ?? this.pathsByKey.set(id, []).get(id)!).push(f.path);
      if (requests.has(id)) continue;
      if (await this.landStored(key, f)) {
        progress.add(f.size);
        continue;
      }
      const req: BlobRequest = { key, label: f.path, size: f.size, origin: source.origin(manifest, f) };
      if (f.sha256) req.sha256 = f.sha256;
      if (f.gitOid) req.gitOid = f.gitOid;
      requests.set(id, req);
    }
    return [...requests.values()];
  }

  /** Land `key` from the store when its content is there (committed by anyone, any time). */
  async landStored(key: BlobKey, digests: { sha256?: string; gitOid?: string }): Promise<boolean> {
    const sha = digests.sha256 ?? (digests.gitOid ? await this.store.shaForGitOid(digests.gitOid) : undefined);
    return sha !== undefined && this.land(key, sha);
  }

  /** Pin `sha` and give it to every path keyed `key`; false when the blob is not (or no longer) stored. */
  async land(key: BlobKey, sha: string): Promise<boolean> {
    if (!(await this.pin(sha))) return false;
    for (const p of this.pathsByKey.get(formatBlobKey(key)) ?? []) this.shas.set(p, sha);
    return true;
  }

  private async pin(sha: string): Promise<boolean> {
    await mkdir(this.pinDir, { recursive: true });
    try {
      await link(this.store.blobPath(sha), join(this.pinDir, sha));
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return true;
      if (code === 'ENOENT') return false;
      throw storageError(e, this.store.root);
    }
  }
}

/** Bytes of the selection held so far, reported as `progress` events (at most every 250 ms). */
class Progress {
  private done = 0;
  private readonly total: number;
  private lastEmit = 0;
  /** Bytes that came over the network in this pull. */
  downloaded = 0;
  /** Bytes each blob's partial file already held when the engine started it (an earlier run's). */
  private readonly resumed = new Map<string, number>();

  constructor(
    files: readonly FileEntry[],
    private readonly onEvent: PullOptions['onEvent'],
  ) {
    this.total = files.reduce((n, f) => n + f.size, 0);
  }

  /** Bytes held without a transfer (already stored, or committed by another pull). */
  add(bytes: number): void {
    this.done += bytes;
  }

  emit(source: ByteSource): void {
    this.onEvent?.({ type: 'progress', bytesDone: this.done, bytesTotal: this.total, source });
  }

  /** Follow the engine's events. */
  readonly onTransfer = (e: TransferEvent): void => {
    if (e.type === 'blob-start') {
      // Bytes an earlier run left durable count as done: a resumed pull starts where it stopped.
      const key = formatBlobKey(e.key);
      const before = this.resumed.get(key) ?? 0;
      if (e.resumedBytes === before) return;
      this.done += e.resumedBytes - before;
      this.resumed.set(key, e.resumedBytes);
      this.emit('origin');
    } else if (e.type === 'progress') {
      this.done += e.bytes;
      this.downloaded += e.bytes;
      const now = Date.now();
      if (now - this.lastEmit >= 250 || this.done === this.total) {
        this.lastEmit = now;
        this.emit(e.source);
      }
    } else if (e.type === 'retry') {
      this.onEvent?.({ type: 'retry', file: e.label, attempt: e.attempt, delayMs: e.delayMs, reason: e.reason });
    } else if (e.type === 'blob-verified') {
      this.onEvent?.({ type: 'file-verified', file: e.label, size: e.size });
    }
  };
}

/**
 * Partial files live in the (possibly shared) store, named by blob. Two pulls of different
 * revisions that share content, on this node or another, must not write one partial file at
 * once: each blob is fetched under its own lease, and blobs someone else is fetching are awaited.
 */
function blobLease(o: FetchMissingOptions, r: BlobRequest): Promise<Lease | undefined> {
  return tryAcquireLease(o.store.leaseDir, `blob-${blobFileStem(r.key)}`, { holder: o.holder, ttlMs: o.pull.leaseTtlMs, onLost: o.onLost });
}

/** Split the requests into ours (leased, or unhashed: the revision lease covers those) and theirs. */
async function claimBlobs(o: FetchMissingOptions, landing: Landing, progress: Progress, requests: BlobRequest[]) {
  const mine: BlobRequest[] = [];
  const leases: Lease[] = [];
  const theirs: BlobRequest[] = [];
  try {
    for (const r of requests) {
      if (r.key.kind === 'path') {
        mine.push(r);
        continue;
      }
      const lease = await blobLease(o, r);
      if (!lease) {
        theirs.push(r);
        continue;
      }
      // Committed by someone else between our look and our lease: nothing to fetch.
      if (await landing.landStored(r.key, r)) {
        progress.add(r.size);
        await lease.release();
        continue;
      }
      mine.push(r);
      leases.push(lease);
    }
  } catch (e) {
    await Promise.all(leases.map((l) => l.release()));
    throw e;
  }
  return { mine, leases, theirs };
}

/** Fetch and verify `reqs`, move each into the blob store and land it. */
async function fetchAndCommit(o: FetchMissingOptions, landing: Landing, progress: Progress, reqs: BlobRequest[]): Promise<void> {
  if (reqs.length === 0) return;
  const { pull, store } = o;
  const hooks = pull.engineHooks;
  const fetched = await fetchBlobs(reqs, {
    partialDir: store.partialDir,
    stateDir: pull.stateDir,
    connections: pull.connections,
    chunkSize: pull.chunkSize,
    limiter: pull.limiter,
    signal: o.signal,
    onEvent: (e) => {
      hooks?.onEvent?.(e);
      progress.onTransfer(e);
    },
    onChunk: hooks?.onChunk,
    stallTimeoutMs: pull.stallTimeoutMs,
    fsync: pull.fsync,
    env: pull.env,
    storeLabel: store.root,
    chunkSources: hooks?.chunkSources,
  });
  for (const [i, b] of fetched.entries()) {
    await store.commitBlob(b.path, b.sha256, reqs[i]!.gitOid);
    await landing.land(b.key, b.sha256);
  }
  forgetBlobs(fetched.map((b) => b.key), { stateDir: pull.stateDir });
}

/** Wait for the blobs other pulls are fetching; take over any whose lease frees up unfinished. */
async function awaitOthers(o: FetchMissingOptions, landing: Landing, progress: Progress, theirs: BlobRequest[]): Promise<void> {
  while (theirs.length > 0) {
    const still: BlobRequest[] = [];
    for (const r of theirs) {
      if (await landing.landStored(r.key, r)) {
        progress.add(r.size);
        progress.emit('origin');
        continue;
      }
      const lease = await blobLease(o, r);
      if (!lease) {
        still.push(r);
        continue;
      }
      try {
        await fetchAndCommit(o, landing, progress, [r]);
      } finally {
        await lease.release();
      }
    }
    theirs = still;
    if (theirs.length > 0) {
      o.pull.onEvent?.({ type: 'waiting', holder: 'another pull fetching shared content' });
      await sleep(o.pull.pollMs ?? 500, o.signal);
    }
  }
}
