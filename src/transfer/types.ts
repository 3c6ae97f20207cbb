import type { BlobKey } from '../core/blob-key.js';
import type { BlobRequest, ByteSource, FetchedBlob, TransferEvent } from '../core/transfer.js';
import type { RateLimiter } from '../core/rate-limiter.js';
import type { OriginBackoff } from '../core/origin-backoff.js';
import type { PriorityGate, TransferPriority } from './priority.js';

export interface EngineOptions {
  /** `<store>/.swift-fetch/partial`: partial files live here, on the store's filesystem. */
  partialDir: string;
  /** Node-local folder for the resume database (SQLite, WAL). */
  stateDir: string;
  /** Concurrent ranged requests across all blobs of this call (default 24, see plan.ts). */
  connections?: number;
  /** Bytes per chunk; by default 16 MiB for big files, smaller for mid-sized ones. */
  chunkSize?: number;
  /** The process-wide token bucket (`--max-rate`); its rate may change while we run. */
  limiter?: RateLimiter;
  signal?: AbortSignal;
  onEvent?: (e: TransferEvent) => void;
  /** Fires when a chunk's bytes are durable in the partial file (for a peer server). */
  onChunk?: (e: ChunkEvent) => void;
  /** A connection delivering no bytes this long is replaced (default 30 s). */
  stallTimeoutMs?: number;
  /** Failed attempts per chunk without progress before NetworkError (default 8). */
  maxRetries?: number;
  /** First backoff step (default 500 ms) and cap (default 30 s); tests shorten them. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Proxy variables (HTTPS_PROXY / HTTP_PROXY / NO_PROXY); default process.env. */
  env?: NodeJS.ProcessEnv;
  /** How to name the store in an out-of-space message. */
  storeLabel?: string;
  /** Places a chunk may come from before the origin (P2P); any failure falls back to the origin. */
  chunkSources?: ChunkSource[];
  /**
   * Tasks that may wait inside chunk sources (on peers) beyond `connections`; they hold no origin
   * connection. Default 1 x connections; 0 restores "a waiting task holds a connection slot".
   */
  sourceWaiters?: number;
  /**
   * fdatasync written chunks in the background (every second) and the whole file before it is
   * returned, so resume state and results also survive a power loss. Costs disk speed: a pull
   * then runs no faster than the disk can flush. Default false: bytes are safe against any death
   * of the process (SIGKILL, OOM), and chunk rows written without a sync are only trusted within
   * the same kernel boot (see src/state/resume.ts). The store may fsync on publish instead.
   */
  fsync?: boolean;
  /**
   * Called once per blob as soon as it is verified, before the others are done (a pull commits it
   * into the store here, so a crash keeps it). Awaited; a throw fails the whole call. The file at
   * `path` is the callee's from then on.
   */
  onVerified?: (blob: FetchedBlob) => Promise<void> | void;
  /**
   * Process-wide pauses per origin (core/origin-backoff.ts): a 429/503 Retry-After that any request
   * receives delays every request to that origin, and the P2P node shares it with its peers.
   */
  originBackoff?: OriginBackoff;
  /**
   * 'urgent' (default: someone waits for it) or 'background' (a pre-pull): while any urgent
   * transfer runs in the process, background ones keep at most 2 origin requests open together
   * (transfer/priority.ts).
   */
  priority?: TransferPriority;
  /** The gate priorities meet at (default: the process's). */
  priorityGate?: PriorityGate;
  /** Hash worker threads (default: cores - 1, at least 1, at most 4). */
  hashWorkers?: number;
  /**
   * Receive worker threads for big files (src/transfer/workers/): ranged origin requests are
   * received, written and reported by these threads, each owning its own connections, while the
   * main thread schedules, records blocks, hands out rate tokens and resolves redirects. 0 keeps
   * every byte on the main thread. Default: see `defaultReceiveWorkers` (plan.ts). Requests through
   * a proxy, probes, single-stream (Range-ignored) blobs and chunk sources stay on the main thread.
   */
  workers?: number;
  /**
   * The receive workers' HTTP client: 'raw' (default; HTTP/1.1 over a socket reading into one
   * reused buffer for plain http, undici in the thread for https; framing it does not handle goes
   * back to the main thread), 'undici', or 'http' (node:http), for comparison.
   */
  workerHttp?: 'undici' | 'http' | 'raw';
}

/**
 * The engine's extension points as one bundle: where chunks may come from before the origin, and
 * the events a peer server follows. P2P makes one (`P2PNode.engineHooks()`) and pulls pass it on.
 */
export type EngineHooks = Pick<EngineOptions, 'chunkSources' | 'onChunk' | 'onEvent' | 'originBackoff'>;

export interface ChunkSourceRequest {
  key: BlobKey;
  sha256?: string;
  size: number;
  /** Byte range `[start, end)` wanted. */
  start: number;
  end: number;
  signal: AbortSignal;
}

/**
 * Somewhere other than the origin that may hold bytes of a blob (a peer). `fetch` returns the
 * bytes of `[start, end)` in order, or undefined when it does not have them. Throwing, stalling or
 * ending early makes the engine continue from the origin where the source stopped. Nothing from a
 * source is trusted: the whole-file hash verifies it, and a mismatch refetches from the origin only.
 */
export interface ChunkSource {
  readonly name: string;
  /** How its bytes are counted in progress and metrics (default 'peer'). */
  readonly byteSource?: ByteSource;
  fetch(req: ChunkSourceRequest): Promise<AsyncIterable<Uint8Array> | undefined>;
}

/** A chunk of `key` whose bytes `[start, end)` are durable in `path`. */
export interface ChunkEvent {
  key: BlobKey;
  path: string;
  start: number;
  end: number;
}

export type { BlobRequest };
