import type { Logger } from 'pino';
import type { LockOption } from '../lock/pins.js';
import type { RateLimiter } from '../core/rate-limiter.js';
import type { ModelRef, S3Location } from '../core/ref.js';
import type { ByteSource } from '../core/transfer.js';
import type { PublishRecord } from '../store/store.js';
import type { EngineHooks, TransferPriority } from '../transfer/index.js';

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
  /**
   * 'urgent' (default): someone waits for this model (a person, an init container, a mirror
   * client). 'background': a pre-pull, which yields the origin to urgent pulls in the process.
   */
  priority?: TransferPriority;
  /** Buckets holding `push --replica` copies: hf/ms files are read from them before the hub (still verified against the hub). */
  replicas?: S3Location[];
  /**
   * A lock file (`--lock`, `lockFile:`): a ref it names is pulled at the locked commit, and every
   * file is checked against the lock's SHA-256. With `strict`, a ref it does not name is refused.
   */
  lock?: LockOption;
}

export type PullEvent =
  | { type: 'resolving'; ref: string }
  | { type: 'resolved'; ref: string; commit: string; files: number; bytesTotal: number }
  | { type: 'waiting'; holder: string }
  | { type: 'progress'; bytesDone: number; bytesTotal: number; source: ByteSource }
  /** `of`: how many retries there will be at most, where that is known. */
  | { type: 'retry'; file: string; attempt: number; of?: number; delayMs: number; reason: string }
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
