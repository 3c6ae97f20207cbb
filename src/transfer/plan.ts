const KiB = 1024;
const MiB = 1024 * KiB;

export const DEFAULT_CHUNK_SIZE = 16 * MiB;

/**
 * Concurrent requests per pull when the caller does not say. With CDN edges capping each
 * connection (~10-40 MB/s per connection is common), the count, not the CPU, sets the ceiling.
 * See docs/benchmarks.md for how this was chosen (time against aria2c -x16 and peak RSS).
 */
export const DEFAULT_CONNECTIONS = 24;
/** Files up to this size are one request: splitting them costs more round trips than it saves. */
export const SINGLE_REQUEST_MAX = 4 * MiB;

/**
 * Chunk size for a file. An explicit size is honoured (within sane bounds); otherwise big files
 * get `DEFAULT_CHUNK_SIZE`, and mid-sized files are cut finer so that every connection gets about
 * two chunks of them (a 100 MB file over 16 capped connections must not use only 7 of them).
 */
export function planChunkSize(size: number, connections: number, requested?: number): number {
  if (requested !== undefined && requested > 0) return Math.max(64 * KiB, Math.floor(requested));
  if (size <= SINGLE_REQUEST_MAX) return Math.max(size, 1);
  const perConnection = Math.ceil(size / (Math.max(1, connections) * 2) / MiB) * MiB;
  return Math.min(DEFAULT_CHUNK_SIZE, Math.max(MiB, perConnection));
}

/**
 * The unit of resume state. Small (1 MiB) so a SIGKILL loses at most about one block per
 * connection beyond what was written, however long the requests are.
 */
export const BLOCK_SIZE = MiB;

export function planBlockSize(size: number, spanSize: number): number {
  return Math.max(1, Math.min(spanSize, BLOCK_SIZE, size));
}

export function chunkCount(size: number, chunkSize: number): number {
  return size === 0 ? 0 : Math.ceil(size / chunkSize);
}

/**
 * Receive worker threads when the caller does not say: one per 4 cores, at least 1, at most 4.
 * Even on 2 cores one thread (raw client) beat the main-thread path: 6.3-7.1 s of CPU per 2 GiB
 * instead of 8.0-10.9, the main thread's share down from 3.4-3.8 s to 1.1-1.6 s, and shorter wall
 * times in every round (docs/benchmarks.md, "Receive workers"). More threads matter where one
 * main thread is the limit (many cores, fast links).
 */
export function defaultReceiveWorkers(cores: number): number {
  return Math.max(1, Math.min(4, Math.floor(cores / 4)));
}
