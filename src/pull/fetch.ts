/**
 * Getting every selected file of a revision into the blob store: what is there already is only
 * pinned; the rest is fetched by the transfer engine, each blob under its own claim so that pulls
 * of other revisions sharing it (on this node or another one on the same volume) fetch it once.
 * Claims hang off the revision's lease (store/lease.ts): one heartbeat however many files.
 * Each blob is committed into the store the moment it verifies, so a crash keeps it.
 */
import { link, mkdir, readdir } from 'node:fs/promises';
import pLimit from 'p-limit';
import { join } from 'node:path';
import { blobFileStem, blobKeyOf, formatBlobKey, type BlobKey } from '../core/blob-key.js';
import type { FileEntry, Manifest } from '../core/manifest.js';
import { sleep } from '../core/sleep.js';
import type { BlobRequest, ByteSource, TransferEvent } from '../core/transfer.js';
import type { Source } from '../sources/index.js';
import { storageError } from '../store/fsutil.js';
import type { Lease } from '../store/lease.js';
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
  /** The revision's lease: blobs this pull fetches are claimed under it. */
  lease: Lease;
  /** Aborts on the caller's signal and on a lost lease. */
  signal: AbortSignal;
  /** The pull's options: engine tuning, events, lease ttl, poll interval. */
  pull: PullOptions;
}

/** Fetch every selected file whose content the blob store lacks; returns path -> sha256 for all, and the bytes moved. */
export async function fetchMissing(o: FetchMissingOptions): Promise<{ shas: Map<string, string>; downloaded: number }> {
  const landing = new Landing(o.store, o.pinDir);
  const progress = new Progress(o.files, o.pull.onEvent);
  const requests = await landing.plan(o.files, o.manifest, o.source, progress, o.signal);
  progress.emit('origin');
  const { mine, theirs } = await claimBlobs(o, landing, progress, requests);
  await fetchAndCommit(o, landing, progress, mine);
  await awaitOthers(o, landing, progress, theirs);
  await clearDeadClaims(o, landing.keys);
  return { shas: landing.shas, downloaded: progress.downloaded };
}

/**
 * Claims a dead pull left on blobs it had committed but not yet unclaimed (a SIGKILL between the
 * two): free already, but files nobody else would remove. One directory listing finds them; a
 * claim taken over and given back removes each (a live one elsewhere is left alone).
 */
async function clearDeadClaims(o: FetchMissingOptions, keys: readonly BlobKey[]): Promise<void> {
  const present = new Set(await readdir(o.store.leaseDir).catch(() => [] as string[]));
  const left = keys.map((key) => claimName({ key })).filter((n) => present.has(`${n}.lease`));
  await inParallel(left, o.signal, async (n) => {
    if (await o.lease.claim(n)) await o.lease.unclaim(n);
  });
}

/**
 * What this pull holds of each file: the blob it has pinned for it. Pinning (a hard link in the
 * pin folder) keeps a blob from being swept by a GC that evicts another revision sharing it.
 */
class Landing {
  /** Repo path -> SHA-256 of its content, for every file landed so far. */
  readonly shas = new Map<string, string>();
  /** The key of every distinct blob of the selection. */
  readonly keys: BlobKey[] = [];
  private readonly pathsByKey = new Map<string, string[]>();

  constructor(
    private readonly store: Store,
    private readonly pinDir: string,
  ) {}

  /** Requests for the files whose content is not in the store yet (one per distinct blob); lands the others. */
  async plan(files: readonly FileEntry[], manifest: Manifest, source: Source, progress: Progress, signal: AbortSignal): Promise<BlobRequest[]> {
    const requests = new Map<string, BlobRequest>();
    const firsts: Array<{ key: BlobKey; f: FileEntry }> = [];
    for (const f of files) {
      // A file the hub gives no hash for is keyed by its place in the commit: fetched, never deduplicated.
      const key = blobKeyOf(f, manifest.commit);
      const id = formatBlobKey(key);
      const paths = this.pathsByKey.get(id);
      if (paths) paths.push(f.path);
      else {
        this.pathsByKey.set(id, [f.path]);
        firsts.push({ key, f });
        this.keys.push(key);
      }
    }
    // Looking in the store is a few small reads per file: many at a time, not 20,000 in a row.
    const held = await inParallel(firsts, signal, ({ key, f }) => this.landStored(key, f));
    for (const [i, { key, f }] of firsts.entries()) {
      if (held[i]) {
        progress.add(f.size);
        continue;
      }
      const req: BlobRequest = { key, label: f.path, size: f.size, origin: source.origin(manifest, f) };
      if (f.sha256) req.sha256 = f.sha256;
      if (f.gitOid) req.gitOid = f.gitOid;
      requests.set(formatBlobKey(key), req);
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
      this.onEvent?.({ type: 'retry', file: e.label, attempt: e.attempt, of: e.of, delayMs: e.delayMs, reason: e.reason });
    } else if (e.type === 'blob-verified') {
      this.onEvent?.({ type: 'file-verified', file: e.label, size: e.size });
    }
  };
}

/** Store lookups and claims at once: enough to hide file-system latency, few descriptors. */
const FS_PARALLEL = 16;

/** `fn` over `items`, FS_PARALLEL at a time, in order; stops early when `signal` aborts. */
async function inParallel<T, R>(items: readonly T[], signal: AbortSignal, fn: (item: T) => Promise<R>): Promise<R[]> {
  const limit = pLimit(FS_PARALLEL);
  return Promise.all(
    items.map((item) =>
      limit(() => {
        signal.throwIfAborted();
        return fn(item);
      }),
    ),
  );
}

/**
 * Partial files live in the (possibly shared) store, named by blob. Two pulls of different
 * revisions that share content, on this node or another, must not write one partial file at
 * once: each blob is fetched under its own claim, and blobs someone else is fetching are awaited.
 */
function claimName(r: Pick<BlobRequest, 'key'>): string {
  return `blob-${blobFileStem(r.key)}`;
}

/** Split the requests into ours (claimed, or unhashed: the revision lease covers those) and theirs. */
async function claimBlobs(o: FetchMissingOptions, landing: Landing, progress: Progress, requests: BlobRequest[]) {
  const mine: BlobRequest[] = [];
  const theirs: BlobRequest[] = [];
  const verdicts = await inParallel(requests, o.signal, async (r): Promise<'mine' | 'theirs' | 'stored'> => {
    if (r.key.kind === 'path') return 'mine';
    if (!(await o.lease.claim(claimName(r)))) return 'theirs';
    // Committed by someone else between our look and our claim: nothing to fetch.
    if (await landing.landStored(r.key, r)) {
      await o.lease.unclaim(claimName(r));
      return 'stored';
    }
    return 'mine';
  });
  for (const [i, r] of requests.entries()) {
    if (verdicts[i] === 'mine') mine.push(r);
    else if (verdicts[i] === 'theirs') theirs.push(r);
    else progress.add(r.size);
  }
  return { mine, theirs };
}

/** Forget resume rows in batches: each call opens the resume database. */
const FORGET_BATCH = 512;

/**
 * Fetch and verify `reqs`; each blob is moved into the blob store, landed and unclaimed the moment
 * it verifies (a crash keeps what is done, and the claim never outlives the partial file).
 */
async function fetchAndCommit(o: FetchMissingOptions, landing: Landing, progress: Progress, reqs: BlobRequest[]): Promise<void> {
  if (reqs.length === 0) return;
  const { pull, store } = o;
  const hooks = pull.engineHooks;
  const byKey = new Map(reqs.map((r) => [formatBlobKey(r.key), r]));
  let forget: BlobKey[] = [];
  const flushForget = () => {
    if (forget.length > 0) forgetBlobs(forget, { stateDir: pull.stateDir });
    forget = [];
  };
  try {
    await fetchBlobs(reqs, {
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
      onVerified: async (b) => {
        const r = byKey.get(formatBlobKey(b.key))!;
        await store.commitBlob(b.path, b.sha256, r.gitOid);
        await landing.land(b.key, b.sha256);
        if (r.key.kind !== 'path') await o.lease.unclaim(claimName(r));
        forget.push(b.key);
        if (forget.length >= FORGET_BATCH) flushForget();
      },
      stallTimeoutMs: pull.stallTimeoutMs,
      fsync: pull.fsync,
      env: pull.env,
      storeLabel: store.root,
      chunkSources: hooks?.chunkSources,
      ...(hooks?.originBackoff ? { originBackoff: hooks.originBackoff } : {}),
      ...(pull.priority ? { priority: pull.priority } : {}),
    });
  } finally {
    flushForget();
  }
}

/** Wait for the blobs other pulls are fetching; take over any whose claim frees up unfinished. */
async function awaitOthers(o: FetchMissingOptions, landing: Landing, progress: Progress, theirs: BlobRequest[]): Promise<void> {
  while (theirs.length > 0) {
    const still: BlobRequest[] = [];
    const freed: BlobRequest[] = [];
    const verdicts = await inParallel(theirs, o.signal, async (r): Promise<'stored' | 'freed' | 'held'> => {
      if (await landing.landStored(r.key, r)) return 'stored';
      return (await o.lease.claim(claimName(r))) ? 'freed' : 'held';
    });
    for (const [i, r] of theirs.entries()) {
      if (verdicts[i] === 'stored') {
        progress.add(r.size);
        progress.emit('origin');
      } else if (verdicts[i] === 'freed') freed.push(r);
      else still.push(r);
    }
    await fetchAndCommit(o, landing, progress, freed);
    theirs = still;
    if (theirs.length > 0) {
      o.pull.onEvent?.({ type: 'waiting', holder: 'another pull fetching shared content' });
      await sleep(o.pull.pollMs ?? 500, o.signal);
    }
  }
}
