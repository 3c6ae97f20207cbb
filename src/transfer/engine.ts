import { lstat, open, rm, statfs, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { constants as fsc, mkdirSync } from 'node:fs';
import type { Dispatcher } from 'undici';
import { IntegrityError, NetworkError, StorageError, isSwiftFetchError } from '../core/errors.js';
import { blobFileStem, formatBlobKey, type BlobKey } from '../core/blob-key.js';
import { checkDigests } from '../core/integrity.js';
import type { BlobRequest, ByteSource, FetchedBlob, TransferEvent } from '../core/transfer.js';
import { formatBytes } from '../core/units.js';
import { ResumeState, currentBootId, type BlobRow } from '../state/resume.js';
import { HashPool, type HashJob } from './hash-pool.js';
import { OriginSession, createDispatcher, isExpiredSignedUrl, openRange, parseContentRange, rangeHeaders, statusError, usesProxy } from './http.js';
import { DEFAULT_CONNECTIONS, SINGLE_REQUEST_MAX, chunkCount, defaultReceiveWorkers, planBlockSize, planChunkSize } from './plan.js';
import { ReceiveIoError, ReceivePool } from './workers/receive-pool.js';
import { availableParallelism } from 'node:os';
import { TRANSFER_BACKOFF, RetryableError, backoffDelay, isRetryableNetworkError, type BackoffPolicy } from '../core/retry.js';
import { sleep } from '../core/sleep.js';
import { queuedWait } from '../core/wakeups.js';
import type { ChunkSource, ChunkEvent, EngineOptions } from './types.js';
import { OriginBackoff } from '../core/origin-backoff.js';
import { processGate } from './priority.js';

/** The process's pauses per origin, for engines not given one: every pull in a daemon shares it. */
export const processBackoff = new OriginBackoff();

/**
 * Bytes gathered per connection before one writev: few write calls, little memory. Measured on
 * 2 GiB pulls: 128-512 KiB cost the same CPU; 1 MiB writes cost 2-3x more kernel time in the
 * pool threads (0.9 s -> 2.2-2.8 s), and copying pieces into a reused buffer saved nothing.
 */
const WRITE_BUFFER = 256 * 1024;
/** Written-but-unsynced chunks are fdatasync'ed in the background this often. */
const SYNC_EVERY_MS = 1000;
/**
 * With chunk sources (peers), tasks waiting inside a source hold no origin connection: up to this
 * many times `connections` tasks may wait there, while origin-bound tasks stay at `connections`.
 * Not more: every node works through the same window of chunks, so the cluster has about as many
 * origin requests open as one node has tasks, and they share the origin's bandwidth. At 4x, on a
 * capped origin, single pieces got so slow that their waiters gave up (20 s) and fetched them
 * again: 1.34-1.41 origin copies at N = 8 (docs/p2p.md); at 1x, 1.000.
 */
const SOURCE_WAITERS_PER_CONNECTION = 1;
/** Never split an in-flight range into halves smaller than this (each split costs a connection). */
const MIN_STEAL = 4 * 1024 * 1024;
const PROGRESS_EVERY = 1024 * 1024;

type ChunkState = 'pending' | 'active' | 'committing' | 'done';

interface Chunk {
  idx: number;
  start: number;
  end: number;
  state: ChunkState;
  written: number;
}

interface Task {
  blob: BlobJob;
  /** A bounded Range request; false for a single stream to the end (server ignores Range). */
  ranged: boolean;
  pos: number;
  end: number;
  epoch: number;
  ac: AbortController;
  /** performance.now() since when we have been waiting on the network, 0 when not waiting. */
  waitingSince: number;
  stalled: boolean;
  probe: boolean;
  /** Set while a receive worker runs this task: tells it its range now ends earlier. */
  shrink?: ((end: number) => void) | undefined;
}

/** writev, then plain writes for whatever a short write left (they report ENOSPC properly). */
async function writeFully(fh: FileHandle, list: Uint8Array[], len: number, position: number): Promise<void> {
  const { bytesWritten } = await fh.writev(list, position);
  if (bytesWritten >= len) return;
  const rest = Buffer.concat(list).subarray(bytesWritten);
  let off = 0;
  while (off < rest.length) {
    const r = await fh.write(rest, off, rest.length - off, position + bytesWritten + off);
    if (r.bytesWritten === 0) throw Object.assign(new Error('no progress writing'), { code: 'EIO' });
    off += r.bytesWritten;
  }
}

/** Thrown inside a task that was cancelled on purpose (file restarted, switched to one stream). */
class Superseded extends Error {}

/** Partial file name: derived from the key, plus the node id so nodes sharing a volume never collide. */
export function partialName(key: BlobKey, nodeId: string): string {
  return `${blobFileStem(key)}.${nodeId}.part`;
}

function fileIdOf(s: { dev: number | bigint; ino: number | bigint }): string {
  return `${s.dev}:${s.ino}`;
}

class BlobJob {
  /** Blocks: the unit of resume state (small, so a kill loses little). */
  chunks: Chunk[] = [];
  chunkSize = 0;
  /** Bytes per request: several blocks, so requests stay few and long. */
  spanSize = 0;
  path = '';
  fh: FileHandle | undefined;
  hash: HashJob | undefined;
  session: OriginSession;
  phase: 'new' | 'probing' | 'open' | 'finishing' | 'done' = 'new';
  single = false;
  epoch = 0;
  refetched = false;
  noSources = false;
  prefixIdx = 0;
  doneCount = 0;
  storedValidator: string | null = null;
  /** Chunks recorded but not yet covered by an fdatasync. */
  unsynced: number[] = [];
  /** Bytes written but not yet reported, by where they came from (batched into `progress` events). */
  readonly pendingProgress: Record<ByteSource, number> = { origin: 0, peer: 0, replica: 0 };
  pendingTotal = 0;
  readonly tasks = new Set<Task>();
  result: FetchedBlob | undefined;
  private syncRunning: Promise<void> | undefined;
  private syncNext: Promise<void> | undefined;
  readonly finished: Promise<FetchedBlob>;
  resolve!: (b: FetchedBlob) => void;
  reject!: (e: unknown) => void;

  /** The key as the resume database writes it. */
  readonly id: string;

  constructor(readonly req: BlobRequest) {
    this.id = formatBlobKey(req.key);
    this.session = new OriginSession(req.origin);
    this.finished = new Promise((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    // Failures surface through fetchBlobs; never as an unhandled rejection.
    this.finished.catch(() => undefined);
  }

  remainingBytes(): number {
    if (this.phase === 'new' && this.chunks.length === 0) return this.req.size;
    let n = 0;
    for (const c of this.chunks) if (c.state !== 'done') n += c.end - c.start;
    return n;
  }

  nextPending(): Chunk | undefined {
    for (let i = this.prefixIdx; i < this.chunks.length; i++) {
      const c = this.chunks[i]!;
      if (c.state === 'pending') return c;
    }
    return undefined;
  }

  /** fdatasync, coalesced: callers share a sync that started after they asked. */
  sync(): Promise<void> {
    const fh = this.fh!;
    if (!this.syncRunning) {
      this.syncRunning = fh.datasync().finally(() => {
        this.syncRunning = undefined;
      });
      return this.syncRunning;
    }
    if (!this.syncNext) {
      this.syncNext = this.syncRunning
        .catch(() => undefined)
        .then(() => {
          this.syncNext = undefined;
          return this.sync();
        });
    }
    return this.syncNext;
  }
}

export class Engine {
  private readonly dispatcher: Dispatcher;
  private readonly state: ResumeState;
  private readonly hashes: HashPool;
  /** Jobs not known to be done (finished ones are dropped from the front now and then). */
  private jobs: BlobJob[] = [];
  private readonly active = new Set<Task>();
  private readonly commits = new Set<Promise<void>>();
  private readonly connections: number;
  private readonly stallMs: number;
  private readonly maxRetries: number;
  private readonly backoff: BackoffPolicy;
  private readonly sources: ChunkSource[];
  private failure: unknown;
  private firstOpen = 0;
  private stallTimer: NodeJS.Timeout | undefined;
  private nodeId = '';
  private readonly bootId = currentBootId();
  private syncTimer: NodeJS.Timeout | undefined;
  /** Tasks inside a chunk source right now (asking, waiting on a peer, or receiving from one). */
  private inSources = 0;
  /** Origin requests open, and tasks waiting for one to free up (FIFO). */
  private originBusy = 0;
  private readonly originQueue: Array<() => void> = [];
  /** Receive threads for ranged origin requests; undefined keeps every byte on the main thread. */
  private readonly receivers: ReceivePool | undefined;

  constructor(private readonly opts: EngineOptions) {
    this.connections = Math.max(1, opts.connections ?? DEFAULT_CONNECTIONS);
    this.stallMs = opts.stallTimeoutMs ?? 30_000;
    this.maxRetries = opts.maxRetries ?? 8;
    this.backoff = {
      ...TRANSFER_BACKOFF,
      ...(opts.retryBaseMs !== undefined ? { baseMs: opts.retryBaseMs } : {}),
      ...(opts.retryMaxMs !== undefined ? { maxMs: opts.retryMaxMs, maxRetryAfterMs: Math.max(opts.retryMaxMs, TRANSFER_BACKOFF.maxRetryAfterMs) } : {}),
    };
    this.sources = opts.chunkSources ?? [];
    this.state = ResumeState.acquire(opts.stateDir);
    this.dispatcher = createDispatcher(this.connections, opts.env ?? process.env);
    this.hashes = new HashPool(opts.hashWorkers);
    const workers = opts.workers ?? envWorkers() ?? defaultReceiveWorkers(availableParallelism());
    // Through a proxy the main thread's dispatcher is the only one that knows how to connect.
    const pool = workers > 0 && !usesProxy(opts.env ?? process.env) ? new ReceivePool(workers, this.connections, opts.workerHttp) : undefined;
    this.receivers = pool?.enabled ? pool : undefined;
  }

  async run(requests: BlobRequest[]): Promise<FetchedBlob[]> {
    // Results by key, not jobs: a finished job (its plan, its session) can be collected.
    const results = new Map<string, FetchedBlob | undefined>();
    const all: Array<Promise<FetchedBlob>> = [];
    for (const r of requests) {
      const id = formatBlobKey(r.key);
      if (!results.has(id)) {
        const job = new BlobJob(r);
        results.set(id, undefined);
        const done = job.finished.then((b) => (results.set(id, b), b));
        done.catch(() => undefined); // surfaces through Promise.all below, or not at all after an early failure
        all.push(done);
        this.jobs.push(job);
      }
    }
    const signal = this.opts.signal;
    const onAbort = () => this.fail(signal!.reason);
    let leaveUrgent: (() => void) | undefined;
    try {
      if (signal?.aborted) throw signal.reason;
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        mkdirSync(this.opts.partialDir, { recursive: true });
      } catch (e) {
        throw this.storageError(e, 'creating the partial folder');
      }
      this.nodeId = this.state.nodeId();
      if (this.opts.priority !== 'background') leaveUrgent = (this.opts.priorityGate ?? processGate).enterUrgent();
      await this.checkSpace();
      this.stallTimer = setInterval(() => this.checkStalls(), Math.max(50, Math.min(1000, this.stallMs / 4)));
      if (this.opts.fsync) this.syncTimer = setInterval(() => this.syncInBackground(), SYNC_EVERY_MS);
      this.pump();
      await Promise.all(all);
      return requests.map((r) => results.get(formatBlobKey(r.key))!);
    } catch (e) {
      this.fail(e);
      // Let every task stop writing before the caller looks at the partial folder.
      await this.drain();
      throw this.failure;
    } finally {
      leaveUrgent?.();
      signal?.removeEventListener('abort', onAbort);
      if (this.stallTimer) clearInterval(this.stallTimer);
      if (this.syncTimer) clearInterval(this.syncTimer);
      // Receive threads first: they write through the files' fds, which are closed next.
      await this.receivers?.close();
      await Promise.all(this.jobs.map((j) => j.fh?.close().catch(() => undefined)));
      await this.hashes.close();
      if (this.failure) await this.dispatcher.destroy().catch(() => undefined);
      else await this.dispatcher.close().catch(() => undefined);
      this.state.release();
    }
  }

  private async drain(): Promise<void> {
    // Bounded: a chunk source that ignores its abort signal must not hang the caller forever.
    const until = performance.now() + 10_000;
    while ((this.active.size > 0 || this.commits.size > 0) && performance.now() < until) {
      if (this.commits.size > 0) {
        const timeout = new AbortController();
        await Promise.race([Promise.allSettled([...this.commits]), sleep(Math.max(0, until - performance.now()), timeout.signal).catch(() => undefined)]);
        timeout.abort();
      }
      if (this.active.size > 0) await new Promise((r) => setTimeout(r, 5));
    }
  }

  private fail(e: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = e;
    for (const t of this.active) t.ac.abort(e);
    for (const j of this.jobs) {
      j.hash?.drop();
      j.reject(e);
    }
  }

  private emit(e: TransferEvent): void {
    try {
      this.opts.onEvent?.(e);
    } catch {
      // A broken progress consumer must not break the transfer.
    }
  }

  // ---------------------------------------------------------------- space

  private async freeBytes(): Promise<number | undefined> {
    try {
      const s = await statfs(this.opts.partialDir);
      return s.bavail * s.bsize;
    } catch {
      return undefined;
    }
  }

  private async checkSpace(): Promise<void> {
    let needed = 0;
    for (const j of this.jobs) {
      const row = this.state.getBlob(j.id);
      let done = 0;
      if (row && row.size === j.req.size) {
        for (const idx of this.state.doneChunks(j.id)) done += Math.min(row.chunkSize, row.size - idx * row.chunkSize);
      }
      needed += Math.max(0, j.req.size - done);
    }
    const free = await this.freeBytes();
    if (free !== undefined && needed > free) {
      throw new StorageError(this.spaceMessage(needed, free), 'ESF_NO_SPACE');
    }
  }

  private spaceMessage(needed: number, free: number | undefined): string {
    const where = this.opts.storeLabel ?? this.opts.partialDir;
    const have = free === undefined ? '' : `, ${formatBytes(free)} free`;
    return `not enough space in the store ${where}: ${formatBytes(needed)} (${needed} bytes) still needed${have}; free some space and run the pull again, it resumes where it stopped`;
  }

  private storageError(e: unknown, what: string): StorageError {
    const code = (e as { code?: string }).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      let needed = 0;
      for (const j of this.jobs) if (j.phase !== 'done') needed += j.remainingBytes();
      return new StorageError(this.spaceMessage(needed, undefined), 'ESF_NO_SPACE', { cause: e });
    }
    const where = this.opts.storeLabel ?? this.opts.partialDir;
    return new StorageError(`storage error in ${where} while ${what}: ${(e as Error).message}`, 'ESF_STORAGE', { cause: e });
  }

  // ---------------------------------------------------------------- scheduling

  /**
   * Start tasks while fewer than `connections` of them are bound for the origin. A task waiting on
   * a peer (inside a chunk source) does not count there: with N nodes sharing a blob, most of a
   * node's chunks wait for other owners, and counting them starved this node's own origin pieces
   * (docs/p2p.md). Those waiters are bounded separately.
   */
  private pump(): void {
    const cap = this.sources.length > 0 ? this.connections + (this.opts.sourceWaiters ?? this.connections * SOURCE_WAITERS_PER_CONNECTION) : this.connections;
    while (this.failure === undefined && this.active.size < cap && this.active.size - this.inSources < this.connections) {
      const t = this.nextTask();
      if (!t) break;
      this.active.add(t);
      t.blob.tasks.add(t);
      void this.runTask(t)
        .catch((e) => {
          if (e instanceof Superseded) return;
          this.fail(e);
        })
        .finally(() => {
          this.active.delete(t);
          t.blob.tasks.delete(t);
          this.pump();
        });
    }
  }

  private nextTask(): (Task) | undefined {
    while (this.firstOpen < this.jobs.length && this.jobs[this.firstOpen]!.phase === 'done') this.firstOpen++;
    if (this.firstOpen >= 1024) {
      this.jobs = this.jobs.slice(this.firstOpen);
      this.firstOpen = 0;
    }
    for (let i = this.firstOpen; i < this.jobs.length; i++) {
      const j = this.jobs[i]!;
      if (j.phase === 'new') {
        j.phase = 'probing';
        return this.makeTask(j, true, 0, 0, true);
      }
      if (j.phase === 'open' && !j.single) {
        const c = j.nextPending();
        if (c) {
          const t = this.makeTask(j, true, 0, 0, false);
          this.takeSpan(j, c, t);
          return t;
        }
      }
    }
    return this.steal();
  }

  /**
   * End game: when nothing is left to start, split the in-flight range with the most bytes to go
   * and give its tail to the idle connection, so the last seconds are not spent on one socket.
   */
  private steal(): Task | undefined {
    let best: Task | undefined;
    for (const t of this.active) {
      if (!t.ranged || t.blob.single || t.probe) continue;
      if (!best || t.end - t.pos > best.end - best.pos) best = t;
    }
    if (!best || best.end - best.pos < 2 * MIN_STEAL) return undefined;
    const mid = best.pos + Math.floor((best.end - best.pos) / 2 / 65536) * 65536;
    const tail = this.makeTask(best.blob, true, mid, best.end, false);
    best.end = mid;
    best.shrink?.(mid);
    return tail;
  }

  /** Give `t` the run of pending blocks starting at `first`, up to one span. */
  private takeSpan(j: BlobJob, first: Chunk, t: Task, maxSpan = j.spanSize): void {
    let last = first;
    first.state = 'active';
    for (let i = first.idx + 1; i < j.chunks.length; i++) {
      const c = j.chunks[i]!;
      if (c.state !== 'pending' || c.end - first.start > maxSpan) break;
      c.state = 'active';
      last = c;
    }
    t.pos = first.start;
    t.end = last.end;
  }

  private makeTask(blob: BlobJob, ranged: boolean, pos: number, end: number, probe: boolean): Task {
    return { blob, ranged, pos, end, epoch: blob.epoch, ac: new AbortController(), waitingSince: 0, stalled: false, probe };
  }

  private checkStalls(): void {
    const now = performance.now();
    for (const t of this.active) {
      if (t.waitingSince > 0 && now - t.waitingSince > this.stallMs && !t.stalled) {
        t.stalled = true;
        t.ac.abort(new RetryableError(`no bytes for ${Math.round(this.stallMs / 1000)} s, replacing the connection`));
      }
    }
  }

  // ---------------------------------------------------------------- blob setup

  private async prepare(j: BlobJob): Promise<void> {
    const { key, size } = j.req;
    const id = j.id;
    j.path = join(this.opts.partialDir, partialName(key, this.nodeId));
    const row = this.state.getBlob(id);
    let resumed: number[] = [];
    let fileId: string | undefined;
    try {
      // lstat and O_NOFOLLOW: a link planted at our partial file's name is never written through.
      const st = await lstat(j.path, { bigint: true }).catch(() => undefined);
      const same = row && st && row.path === j.path && row.size === size && row.fileId === fileIdOf(st) && st.size === BigInt(size);
      j.spanSize = planChunkSize(size, this.connections, this.opts.chunkSize);
      if (same) {
        j.fh = await open(j.path, fsc.O_RDWR | fsc.O_NOFOLLOW);
        j.chunkSize = row.chunkSize;
        j.storedValidator = row.validator;
        resumed = this.state.trustedChunks(id, this.bootId);
      } else {
        // Fresh start: a file renamed away (published), replaced, or never made.
        await rm(j.path, { force: true });
        j.fh = await open(j.path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o644);
        await j.fh.truncate(size);
        fileId = fileIdOf(await j.fh.stat({ bigint: true }));
        j.chunkSize = planBlockSize(size, j.spanSize);
        const fresh: BlobRow = { key: id, size, chunkSize: j.chunkSize, validator: null, path: j.path, fileId, bootId: this.bootId };
        this.state.resetBlob(fresh);
      }
    } catch (e) {
      if (isSwiftFetchError(e)) throw e;
      throw this.storageError(e, `creating ${j.path}`);
    }
    this.plan(j, new Set(resumed));
    const resumedBytes = j.chunks.reduce((n, c) => n + (c.state === 'done' ? c.end - c.start : 0), 0);
    this.emit({ type: 'blob-start', key, label: j.req.label, size, resumedBytes });
    j.hash = this.hashes.open(j.path, size, !j.req.sha256 && !!j.req.gitOid);
    this.advancePrefix(j);
  }

  private plan(j: BlobJob, done: Set<number>): void {
    const n = chunkCount(j.req.size, j.chunkSize);
    j.chunks = [];
    for (let i = 0; i < n; i++) {
      const start = i * j.chunkSize;
      const end = Math.min(j.req.size, start + j.chunkSize);
      const isDone = done.has(i);
      j.chunks.push({ idx: i, start, end, state: isDone ? 'done' : 'pending', written: 0 });
    }
    j.doneCount = j.chunks.filter((c) => c.state === 'done').length;
    j.prefixIdx = 0;
  }

  /** Start the file over (origin changed, or the bytes did not verify). No task may be running. */
  private async restart(j: BlobJob, validator: string | null): Promise<void> {
    j.epoch++;
    j.hash?.drop();
    j.single = false;
    try {
      await j.fh!.truncate(0);
      await j.fh!.truncate(j.req.size);
    } catch (e) {
      throw this.storageError(e, `resetting ${j.path}`);
    }
    const fileId = fileIdOf(await j.fh!.stat({ bigint: true }));
    this.state.resetBlob({ key: j.id, size: j.req.size, chunkSize: j.chunkSize, validator, path: j.path, fileId, bootId: this.bootId });
    j.unsynced = [];
    j.storedValidator = validator;
    this.plan(j, new Set());
    j.hash = this.hashes.open(j.path, j.req.size, !j.req.sha256 && !!j.req.gitOid);
  }

  // ---------------------------------------------------------------- tasks

  private async runTask(t: Task): Promise<void> {
    const j = t.blob;
    if (t.probe) {
      await this.prepare(j);
      if (j.doneCount === j.chunks.length) {
        j.phase = 'finishing';
        await this.finalize(j, t);
        return;
      }
      j.spanSize = Math.max(j.spanSize, j.chunkSize);
      // With receive threads, the probe (main thread, undici) asks for one block only: the rest
      // goes to the threads. A full 16 MiB span received here at full speed left ~20 MB of socket
      // buffers waiting for the main isolate's GC at the peak (docs/benchmarks.md, memory).
      const probeSpan = this.receivers && j.req.size > SINGLE_REQUEST_MAX ? j.chunkSize : j.spanSize;
      this.takeSpan(j, j.nextPending()!, t, probeSpan);
    }
    let failures = 0;
    let attempts = 0;
    let triedSources = false;
    while (t.pos < t.end) {
      if (this.failure !== undefined) throw this.failure;
      if (t.epoch !== j.epoch) throw new Superseded();
      const before = t.pos;
      try {
        if (!triedSources && this.sources.length > 0 && !j.noSources && t.ranged) {
          triedSources = true;
          await this.fromSources(t);
          if (t.pos >= t.end) break;
        }
        await this.fromOrigin(t);
      } catch (e) {
        if (e instanceof Superseded) throw e;
        if (this.failure !== undefined) throw this.failure;
        if (t.epoch !== j.epoch) throw new Superseded();
        const retryable = t.stalled || (!isSwiftFetchError(e) && isRetryableNetworkError(e));
        if (!retryable) throw e;
        t.stalled = false;
        t.ac = new AbortController();
        if (this.failure !== undefined) throw this.failure;
        attempts++;
        // A connection that made progress earns its retries back; a hard cap still ends a server that drips.
        failures = t.pos > before ? 1 : failures + 1;
        const reason = e instanceof RetryableError ? e.reason : `${(e as Error).message}${(e as { code?: string }).code ? ` (${(e as { code?: string }).code})` : ''}`;
        if (failures > this.maxRetries || attempts > this.maxRetries * 8) {
          throw new NetworkError(`${j.req.label}: giving up after ${attempts} attempts: ${reason}`, 'ESF_NETWORK', { cause: e });
        }
        if (e instanceof RetryableError && e.origin && e.retryAfterMs !== undefined) (this.opts.originBackoff ?? processBackoff).note(e.origin, e.retryAfterMs);
        const delayMs = backoffDelay(failures, this.backoff, e instanceof RetryableError ? e.retryAfterMs : undefined);
        this.emit({ type: 'retry', key: j.req.key, label: j.req.label, attempt: failures, of: this.maxRetries, delayMs, reason });
        t.waitingSince = 0;
        await sleep(delayMs, t.ac.signal);
      }
    }
  }

  private async fromSources(t: Task): Promise<void> {
    this.inSources++;
    try {
      await this.trySources(t);
    } finally {
      this.inSources--;
    }
  }

  private async trySources(t: Task): Promise<void> {
    const j = t.blob;
    for (const src of this.sources) {
      if (t.pos >= t.end) return;
      try {
        t.waitingSince = performance.now();
        const req = { key: j.req.key, size: j.req.size, start: t.pos, end: t.end, signal: t.ac.signal, ...(j.req.sha256 ? { sha256: j.req.sha256 } : {}) };
        const stream = await src.fetch(req);
        if (!stream) continue;
        // A source answered first: the blob opens without asking the origin for its validator
        // (whatever the bytes, the whole-file hash judges them).
        if (t.probe) this.openBlob(j, t);
        await this.pumpBody(t, stream, 0, src.byteSource ?? 'peer', false);
      } catch (e) {
        if (e instanceof Superseded || this.failure !== undefined || t.epoch !== j.epoch) throw e;
        if (e instanceof StorageError) throw e;
        // Any other trouble with a source: fall through to the next one, then the origin.
        if (t.ac.signal.aborted) {
          t.ac = new AbortController();
          t.stalled = false;
        }
      } finally {
        t.waitingSince = 0;
      }
    }
  }

  /** An origin connection slot (at most `connections` origin requests open at once). */
  private async originSlot(signal: AbortSignal): Promise<void> {
    if (this.originBusy < this.connections) {
      this.originBusy++;
      return;
    }
    await queuedWait(this.originQueue, signal, () => this.originBusy++);
  }

  private releaseOriginSlot(): void {
    this.originBusy--;
    this.originQueue.shift()?.();
  }

  private async fromOrigin(t: Task): Promise<void> {
    // Waiting for a slot is not a stall: the clock starts with the request.
    await this.originSlot(t.ac.signal);
    let releaseGate: (() => void) | undefined;
    try {
      if (this.opts.priority === 'background') releaseGate = await (this.opts.priorityGate ?? processGate).background(t.ac.signal);
      // A worker that was refused (redirect, expired URL, 200, error status) leaves the attempt to
      // the main thread, which knows how to handle each.
      if (this.receivers && (await this.viaWorker(t, this.receivers))) return;
      await this.originRequest(t);
    } finally {
      releaseGate?.();
      this.releaseOriginSlot();
    }
  }

  private async originRequest(t: Task): Promise<void> {
    const j = t.blob;
    const backoff = this.opts.originBackoff ?? processBackoff;
    // Known hosts' pauses are waited out before the stall clock starts (openRange checks each hop too).
    await backoff.wait([j.session.hubOrigin, new URL(j.session.target ?? j.session.origin.url).origin], t.ac.signal);
    t.waitingSince = performance.now();
    const wantEnd = t.ranged ? t.end : undefined;
    // A pause the hub or the CDN asked of anyone in this process (or of a peer) holds us too.
    const res = await openRange(this.dispatcher, j.session, j.req.label, t.pos, wantEnd, t.ac.signal, backoff);
    let skip = 0;
    try {
      const size = j.req.size;
      if (res.status === 206) {
        const cr = parseContentRange(res.headers['content-range'] as string | undefined);
        if (!cr) throw new RetryableError(`${j.req.label}: 206 without a valid Content-Range`);
        if (cr.total !== undefined && cr.total !== size) {
          throw new IntegrityError(`${j.req.label}: the origin serves ${cr.total} bytes, the listing says ${size}`, { expected: `size:${size}`, found: `size:${cr.total}` });
        }
        if (cr.start !== t.pos) throw new RetryableError(`${j.req.label}: asked for bytes from ${t.pos}, got ${cr.start}`);
      } else {
        const len = Number(res.headers['content-length']);
        if (Number.isFinite(len) && res.headers['content-length'] !== undefined && len !== size) {
          throw new IntegrityError(`${j.req.label}: the origin serves ${len} bytes, the listing says ${size}`, { expected: `size:${size}`, found: `size:${len}` });
        }
      }
      if (t.probe) await this.checkValidator(j, t, res.validator ?? j.session.validator);
      if (res.status === 200) {
        // 200 to a Range request: the server ignores Range; this blob becomes one stream, and a
        // retry of it skips what we already hold.
        if (!j.single && !(t.pos === 0 && t.end >= size)) this.enterSingle(j, t);
        skip = t.pos;
      }
      await this.pumpBody(t, res.body, skip, 'origin', true);
    } finally {
      res.body.destroy();
    }
  }

  /**
   * One ranged request through a receive worker: the main thread picks the final URL it already
   * resolved and the headers that URL may get (rangeHeaders: the hub token only for the hub's own
   * host); the worker follows no redirect. Written ranges come back and are credited here exactly
   * as pumpBody credits them. False when the worker was refused and nothing was written.
   */
  private async viaWorker(t: Task, pool: ReceivePool): Promise<boolean> {
    const j = t.blob;
    const s = j.session;
    if (!t.ranged || t.probe || j.single || !j.fh) return false;
    const target = s.target;
    const u = new URL(target ?? s.origin.url);
    if (u.origin === s.hubOrigin && s.origin.sign) return false;
    await (this.opts.originBackoff ?? processBackoff).wait([s.hubOrigin, u.origin], t.ac.signal);
    const limiter = this.opts.limiter;
    const signal = t.ac.signal;
    // Every thread socket busy: wait for one rather than receive here (bytes received on the main
    // thread leave their buffers to its GC: ~20 MB at the peak). Not a stall: no request is open.
    await pool.freeSlot(signal);
    // While the thread waits for tokens, nothing it reports restarts the stall clock.
    let onBucket = false;
    t.waitingSince = performance.now();
    const run = pool.receive(
      { url: u.href, headers: rangeHeaders(s, u, t.pos, t.end), fd: j.fh.fd, pos: t.pos, end: t.end, size: j.req.size },
      {
        written: (start, len) => {
          if (!onBucket) t.waitingSince = performance.now();
          if (t.epoch !== j.epoch || this.failure !== undefined) return;
          // After an end-game split the worker may have written past our (new) end: the tail's
          // task credits those bytes, never both.
          const from = Math.max(start, t.pos);
          const to = Math.min(start + len, t.end);
          if (to <= from) return;
          t.pos = to;
          this.account(j, t, from, to - from, 'origin');
        },
        alive: () => {
          if (!onBucket) t.waitingSince = performance.now();
        },
        take: limiter
          ? (n) => {
              // Waiting on the bucket is not a stall.
              const wait = limiter.take(n, signal);
              if (!wait) return undefined;
              onBucket = true;
              t.waitingSince = 0;
              return wait.then(() => {
                onBucket = false;
                t.waitingSince = performance.now();
              });
            }
          : undefined,
      },
      signal,
    );
    if (!run) return false;
    t.shrink = run.shrink;
    let outcome;
    try {
      outcome = await run.done;
    } catch (e) {
      if (e instanceof ReceiveIoError) throw this.storageError(e, `writing ${j.req.label}`);
      if (signal.aborted && signal.reason instanceof Superseded) throw signal.reason;
      if (t.stalled) throw new RetryableError(`${j.req.label}: no bytes for ${Math.round(this.stallMs / 1000)} s`, undefined, { cause: e });
      throw e;
    } finally {
      t.shrink = undefined;
      t.waitingSince = 0;
    }
    if (t.epoch !== j.epoch) throw new Superseded();
    const refused = outcome.refused;
    if (refused) {
      const toHub = u.origin === s.hubOrigin;
      // An error status is the same error the main path gives (Retry-After, not found, auth...);
      // redirects, an expired CDN URL (re-signed through the hub), a 200 or a wrong range are the
      // main thread's to handle.
      if (refused.status < 400) return false;
      if (isExpiredSignedUrl(refused.status, toHub)) {
        // As openRange does on this answer: the signed URL expired, go back to the hub for a new
        // one (unless another connection already got one).
        if (target !== undefined && s.target === target) s.target = undefined;
        return false;
      }
      throw statusError(refused.status, refused.headers, j.req.label, u, toHub, refused.body, s.origin.authHint);
    }
    if (t.pos < t.end) throw new RetryableError(`${j.req.label}: the connection ended early at byte ${t.pos} of ${t.end}`);
    return true;
  }

  private async checkValidator(j: BlobJob, t: Task, seen: string | undefined): Promise<void> {
    t.probe = false;
    if (seen !== undefined && j.storedValidator !== null && j.storedValidator !== seen) {
      // The origin changed under a resumed file: nothing we hold can be trusted.
      await this.restart(j, seen);
      t.epoch = j.epoch;
      for (const c of j.chunks) if (c.end > t.pos && c.start < t.end) c.state = 'active';
      this.emit({ type: 'blob-start', key: j.req.key, label: j.req.label, size: j.req.size, resumedBytes: 0 });
    } else if (seen !== undefined && j.storedValidator === null) {
      this.state.setValidator(j.id, seen);
      j.storedValidator = seen;
    }
    this.openBlob(j, t);
  }

  private openBlob(j: BlobJob, t: Task): void {
    t.probe = false;
    if (j.phase === 'probing') {
      j.phase = 'open';
      this.pump();
    }
  }

  private enterSingle(j: BlobJob, t: Task): void {
    j.single = true;
    j.epoch++;
    t.epoch = j.epoch;
    for (const other of j.tasks) if (other !== t) other.ac.abort(new Superseded());
    for (const c of j.chunks) {
      if (c.state === 'active') {
        c.state = 'pending';
        c.written = 0;
      }
    }
    const first = j.chunks.find((c) => c.state === 'pending');
    t.ranged = false;
    t.pos = first ? first.start : j.req.size;
    t.end = j.req.size;
  }

  /**
   * Stream a body into the file at `t.pos`, through the rate limiter, in WRITE_BUFFER writes
   * awaited one at a time: the socket is not read while the disk is busy, so memory stays flat.
   */
  private async pumpBody(t: Task, body: AsyncIterable<Uint8Array>, skip: number, source: ByteSource, owned: boolean): Promise<void> {
    const j = t.blob;
    // Pieces are gathered by reference (undici never reuses them) and written with one writev:
    // no copy on the main thread. A source's pieces are copied, it may reuse its buffers.
    let pend: Uint8Array[] = [];
    let pendStart = t.pos;
    let pendLen = 0;
    const limiter = this.opts.limiter;
    const signal = t.ac.signal;
    const flush = async () => {
      if (pendLen === 0) return;
      const list = pend;
      const start = pendStart;
      const len = pendLen;
      pend = [];
      pendStart += len;
      pendLen = 0;
      try {
        await writeFully(j.fh!, list, len, start);
      } catch (e) {
        throw this.storageError(e, `writing ${j.req.label}`);
      }
      if (t.epoch !== j.epoch) throw new Superseded();
      this.account(j, t, start, len, source);
    };
    t.waitingSince = performance.now();
    try {
      for await (const piece of body) {
        t.waitingSince = 0;
        let p = piece;
        if (limiter) {
          const wait = limiter.take(p.length, signal);
          if (wait) await wait;
        }
        if (skip > 0) {
          const n = Math.min(skip, p.length);
          skip -= n;
          p = p.subarray(n);
        }
        const n = Math.min(p.length, t.end - t.pos);
        if (n > 0) {
          const q = n === p.length ? p : p.subarray(0, n);
          pend.push(owned ? q : Buffer.from(q));
          pendLen += n;
          t.pos += n;
          if (pendLen >= WRITE_BUFFER) await flush();
        }
        if (t.pos >= t.end) break;
        t.waitingSince = performance.now();
      }
    } catch (e) {
      // Keep what arrived before the failure: the retry continues from t.pos.
      t.waitingSince = 0;
      if (t.epoch === j.epoch && this.failure === undefined) {
        // A failed write here (disk full, I/O error) must surface: swallowing it would leave a
        // hole before t.pos that no retry fills, and the blob would never finish.
        await flush();
      }
      if (signal.aborted && signal.reason instanceof Superseded) throw signal.reason;
      if (t.stalled) throw new RetryableError(`${j.req.label}: no bytes for ${Math.round(this.stallMs / 1000)} s`, undefined, { cause: e });
      throw e;
    }
    t.waitingSince = 0;
    await flush();
    if (t.pos < t.end) throw new RetryableError(`${j.req.label}: the connection ended early at byte ${t.pos} of ${t.end}`);
  }

  /** Credit written bytes to their chunk(s); a chunk whose bytes are all on disk gets committed. */
  private account(j: BlobJob, t: Task, start: number, len: number, source: ByteSource): void {
    // Kept apart by source: a batch mixes the blob's peer and origin streams, and crediting it all to
    // whichever wrote last skewed the metrics and the lock file's provenance.
    j.pendingProgress[source] += len;
    j.pendingTotal += len;
    if (j.pendingTotal >= PROGRESS_EVERY) this.flushProgress(j);
    const cs = j.chunkSize;
    // A write may cross block boundaries; blocks already done (a single stream re-reading) are skipped.
    const end = start + len;
    for (let i = Math.floor(start / cs); i < j.chunks.length && i * cs < end; i++) {
      const c = j.chunks[i]!;
      if (c.state !== 'pending' && c.state !== 'active') continue;
      c.state = 'active';
      c.written += Math.min(end, c.end) - Math.max(start, c.start);
      if (c.written >= c.end - c.start) this.commit(j, c);
    }
  }

  private flushProgress(j: BlobJob): void {
    if (j.pendingTotal === 0) return;
    j.pendingTotal = 0;
    for (const source of Object.keys(j.pendingProgress) as ByteSource[]) {
      const bytes = j.pendingProgress[source];
      if (bytes === 0) continue;
      j.pendingProgress[source] = 0;
      this.emit({ type: 'progress', key: j.req.key, bytes, source });
    }
  }

  /**
   * A chunk's bytes are all written: record it at once (it now survives our death; see
   * src/state/resume.ts for why that is safe before the fsync), let the hasher move on, and
   * leave the fsync to the background.
   */
  private commit(j: BlobJob, c: Chunk): void {
    this.state.markChunk(j.id, c.idx, false);
    if (this.opts.fsync) j.unsynced.push(c.idx);
    c.state = 'done';
    j.doneCount++;
    this.advancePrefix(j);
    this.opts.onChunk?.({ key: j.req.key, path: j.path, start: c.start, end: c.end });
    if (j.doneCount === j.chunks.length && j.phase !== 'finishing') {
      j.phase = 'finishing';
      this.flushProgress(j);
      this.track(this.finalize(j));
    }
  }

  private track(p: Promise<void>): void {
    const q = p.catch((e) => this.fail(e)).finally(() => this.commits.delete(q));
    this.commits.add(q);
  }

  /** fdatasync files with recorded-but-unsynced chunks, then mark those rows as synced. */
  private syncInBackground(): void {
    for (const j of this.jobs) {
      if (j.unsynced.length === 0 || !j.fh || j.phase === 'finishing' || j.phase === 'done') continue;
      const idxs = j.unsynced;
      j.unsynced = [];
      const epoch = j.epoch;
      this.track(
        j.sync().then(
          () => {
            if (epoch === j.epoch) this.state.markSynced(j.id, idxs);
          },
          (e: unknown) => {
            throw this.storageError(e, `syncing ${j.req.label}`);
          },
        ),
      );
    }
  }

  private advancePrefix(j: BlobJob): void {
    while (j.prefixIdx < j.chunks.length && j.chunks[j.prefixIdx]!.state === 'done') j.prefixIdx++;
    const upTo = j.prefixIdx === 0 ? 0 : j.chunks[j.prefixIdx - 1]!.end;
    if (upTo > 0) j.hash!.advance(upTo);
  }

  /**
   * Stop the blob's other tasks and wait until their writes settled. All blocks are done, so they
   * have nothing left to add, but one whose range was split may still be writing bytes past its
   * new end (its tail's task already credited them): no write may land in a file once it is
   * hashed, and a receive thread writes through the fd, which must not be closed under it.
   */
  private async quiesce(j: BlobJob, self: Task | undefined): Promise<void> {
    for (const t of j.tasks) if (t !== self) t.ac.abort(new Superseded());
    const until = performance.now() + 10_000;
    while ([...j.tasks].some((t) => t !== self) && performance.now() < until) await sleep(2);
  }

  private async finalize(j: BlobJob, self?: Task): Promise<void> {
    const { key, label, size, sha256, gitOid } = j.req;
    await this.quiesce(j, self);
    // With fsync on, what we return must be on disk, not only in the page cache.
    const [found] = await Promise.all([
      j.hash!.finish(size),
      this.opts.fsync
        ? j.sync().catch((e: unknown) => {
            throw this.storageError(e, `syncing ${label}`);
          })
        : undefined,
    ]);
    if (this.opts.fsync && j.unsynced.length > 0 && this.failure === undefined) {
      this.state.markSynced(j.id, j.unsynced);
      j.unsynced = [];
    }
    if (this.failure !== undefined) return;
    const bad = checkDigests({ ...(sha256 ? { sha256 } : {}), ...(gitOid ? { gitOid } : {}) }, found);
    if (!bad) {
      await j.fh!.close().catch(() => undefined);
      j.fh = undefined;
      j.phase = 'done';
      // A finished job keeps only its result: 20,000 small files must not keep 20,000 chunk plans.
      j.chunks = [];
      j.hash = undefined;
      this.emit({ type: 'blob-verified', key, label, size });
      j.result = { key, path: j.path, sha256: found.sha256, size };
      this.pump();
      if (this.opts.onVerified) await this.opts.onVerified(j.result);
      j.resolve(j.result);
      return;
    }
    this.emit({ type: 'hash-mismatch', key, label, expected: bad.expected, found: bad.found });
    if (!j.refetched) {
      // Without per-chunk hashes nothing can be blamed precisely: fetch the whole file again,
      // from the origin only (a peer may have been the liar).
      j.refetched = true;
      j.noSources = true;
      await this.restart(j, j.storedValidator);
      j.phase = 'open';
      this.pump();
      return;
    }
    // Still wrong: leave nothing that could pass for a finished file.
    await j.fh!.close().catch(() => undefined);
    j.fh = undefined;
    await rm(j.path, { force: true }).catch(() => undefined);
    this.state.forget(j.id);
    j.phase = 'done';
    throw new IntegrityError(`${label}: content does not match the hub's hash after refetching (expected ${bad.expected}, got ${bad.found})`, {
      expected: bad.expected,
      found: bad.found,
      path: label,
    });
  }
}

export type { ChunkEvent };

/** SWIFT_FETCH_ENGINE_WORKERS: force the receive worker count (tests run the suites with it on; benchmarks compare). */
function envWorkers(): number | undefined {
  const v = process.env.SWIFT_FETCH_ENGINE_WORKERS;
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  // A typo must not start a thousand threads: past 64 the cores are long used up.
  return Number.isInteger(n) && n >= 0 ? Math.min(n, 64) : undefined;
}
