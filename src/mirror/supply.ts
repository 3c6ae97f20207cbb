/**
 * Getting a blob into the store for waiting clients: one fetch per blob however many clients ask,
 * through the transfer engine (peers first, then the origin; verified; resumable), under the same
 * per-blob lease a pull takes, so the mirror, the daemon's own pulls and other processes sharing
 * the store never download one blob twice at once. Progress goes to `BlobProgress`, which is what
 * readers follow; the verified file is committed to the content store.
 */
import { open, readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { StorageError } from '../core/errors.js';
import { blobFileStem, formatBlobKey } from '../core/blob-key.js';
import { gitBlobId } from '../core/integrity.js';
import type { BlobRequest, ByteSource, TransferEvent } from '../core/transfer.js';
import { sleep } from '../core/sleep.js';
import { tryAcquireLease, type Lease } from '../store/lease.js';
import type { Store } from '../store/store.js';
import { fetchBlobs, forgetBlobs, type ChunkEvent, type ChunkSource, type RateLimiter } from '../transfer/index.js';
import type { BlobProgress } from './progress.js';

export interface EngineTap {
  onEvent: (e: TransferEvent) => void;
  onChunk: (e: ChunkEvent) => void;
}

export interface SupplyDeps {
  store: Store;
  stateDir: string;
  progress: BlobProgress;
  /** The daemon's engine hooks around our tap (P2P chunk sources when peers are on). */
  engineHooks: (tap: EngineTap) => { chunkSources?: ChunkSource[]; onEvent?: (e: TransferEvent) => void; onChunk?: (e: ChunkEvent) => void };
  limiter?: RateLimiter;
  /** Proxy variables for the engine's connections (the daemon's environment). */
  env?: NodeJS.ProcessEnv;
  /** Connections for the whole mirror, shared by the fetches running at once. */
  connections: number;
  chunkSize?: number;
  /** Make each fetched file durable (fdatasync) before the store takes it; clients are not held for it. */
  fsync: boolean;
  holder: string;
  leaseTtlMs?: number;
  /** Stops every fetch (daemon shutdown). */
  signal: AbortSignal;
  logger: Logger;
  /** Bytes that arrived for the mirror's fetches, by source (the daemon's received-bytes counter). */
  onBytes?: (source: ByteSource, n: number) => void;
  /** A fetch of `key` ended (the blob is in the store, or the fetch gave up). */
  onSettled: (key: string) => void;
  /** How often to look again while another process holds the blob's lease. */
  pollMs?: number;
}

/** fdatasync a verified file, so that what the store publishes survives a power loss too. */
async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

/** Files this small that only ModelScope hashed also get their git blob id, so an HF client finds them too. */
const GIT_ALIAS_MAX = 8 * 1024 * 1024;
/** Longest we keep waiting for another process's download of a blob before trying ourselves again. */
const WAIT_OTHERS_MS = 30 * 60_000;

export class BlobSupply {
  private readonly running = new Map<string, Promise<void>>();

  constructor(private readonly d: SupplyDeps) {}

  get active(): number {
    return this.running.size;
  }

  /** Path of the verified content in the store, if it is there. */
  async stored(f: { sha256?: string; gitOid?: string }): Promise<string | undefined> {
    if (f.sha256) return (await this.d.store.hasBlob(f.sha256)) ? this.d.store.blobPath(f.sha256) : undefined;
    const sha = f.gitOid ? await this.d.store.shaForGitOid(f.gitOid) : undefined;
    return sha ? this.d.store.blobPath(sha) : undefined;
  }

  /** Start fetching `req` unless this process already is; failures are reported to BlobProgress. */
  ensure(req: BlobRequest, opts: { gitAlias: boolean }): void {
    const id = formatBlobKey(req.key);
    if (this.running.has(id) || this.d.signal.aborted) return;
    this.d.progress.begin(req.key);
    const run = this.run(req, opts)
      .catch((e: unknown) => {
        const err = e instanceof Error ? e : new Error(String(e));
        if (!this.d.signal.aborted) this.d.logger.warn({ file: req.label, key: id, err: err.message }, 'mirror fetch failed');
        this.d.progress.fail(req.key, err);
      })
      .finally(() => {
        this.running.delete(id);
        this.d.onSettled(id);
      });
    this.running.set(id, run);
  }

  /** Wait for every fetch to wind down (after the shutdown signal). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.running.values()]);
  }

  private leaseName(key: BlobRequest['key']): string {
    // The same name a pull takes for this blob, so the two never fetch it at once.
    return `blob-${blobFileStem(key)}`;
  }

  private async run(req: BlobRequest, opts: { gitAlias: boolean }): Promise<void> {
    // A lost lease means another process may be writing the same partial file now: stop, as pull does.
    const lost = new AbortController();
    const lease = await this.acquire(req, () => lost.abort(new StorageError(`lost the download lease of ${req.label}; another process took it over`, 'ESF_LEASE_LOST')));
    if (!lease) return;
    try {
      if (await this.stored(req)) return;
      // Each fetch running at once gets a fair share of the mirror's connections.
      const total = this.d.connections;
      const connections = Math.max(Math.min(4, total), Math.floor(total / Math.max(1, this.running.size)));
      const tap = this.d.progress.tap;
      const hooks = this.d.engineHooks({
        onChunk: tap.onChunk,
        onEvent: (e) => {
          if (e.type === 'progress') this.d.onBytes?.(e.source, e.bytes);
          tap.onEvent(e);
        },
      });
      const [b] = await fetchBlobs([req], {
        partialDir: this.d.store.partialDir,
        stateDir: this.d.stateDir,
        connections,
        ...(this.d.chunkSize ? { chunkSize: this.d.chunkSize } : {}),
        ...(this.d.limiter ? { limiter: this.d.limiter } : {}),
        ...(this.d.env ? { env: this.d.env } : {}),
        // Clients wait for verification, not for the disk: the file is synced below, before the store takes it.
        fsync: false,
        signal: AbortSignal.any([this.d.signal, lost.signal]),
        storeLabel: this.d.store.root,
        ...hooks,
      });
      if (this.d.fsync) await syncFile(b!.path);
      const alias = req.sha256 === undefined ? req.gitOid : opts.gitAlias && req.size <= GIT_ALIAS_MAX ? gitBlobId(await readFile(b!.path)) : undefined;
      await this.d.store.commitBlob(b!.path, b!.sha256, alias);
      forgetBlobs([req.key], { stateDir: this.d.stateDir });
    } finally {
      await lease.release();
    }
  }

  /**
   * The blob's lease, or undefined once the content is in the store. While another process holds
   * the lease (a pull, another node on a shared store), its bytes land in the store when done.
   */
  private async acquire(req: BlobRequest, onLost: () => void): Promise<Lease | undefined> {
    const until = Date.now() + WAIT_OTHERS_MS;
    for (;;) {
      const lease = await tryAcquireLease(this.d.store.leaseDir, this.leaseName(req.key), {
        holder: this.d.holder,
        onLost,
        ...(this.d.leaseTtlMs ? { ttlMs: this.d.leaseTtlMs } : {}),
      });
      if (lease) return lease;
      if (await this.stored(req)) return undefined;
      if (Date.now() > until) throw new Error(`${req.label}: another process has held the download of this file for ${WAIT_OTHERS_MS / 60_000} minutes`);
      await sleep(this.d.pollMs ?? 500, this.d.signal);
    }
  }
}
