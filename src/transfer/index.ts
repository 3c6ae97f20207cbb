/**
 * The transfer engine: pinned blobs in, verified files in the store's partial folder out.
 * This is the only public entry of src/transfer.
 */
import { stat } from 'node:fs/promises';
import { formatBlobKey, type BlobKey } from '../core/blob-key.js';
import type { BlobRequest, FetchedBlob } from '../core/transfer.js';
import { ResumeState, durableRanges } from '../state/resume.js';
import { Engine } from './engine.js';
import type { EngineOptions } from './types.js';

export { RateLimiter, type Clock } from '../core/rate-limiter.js';
export { OriginBackoff } from '../core/origin-backoff.js';
export { processBackoff } from './engine.js';
export { PriorityGate, processGate, type TransferPriority } from './priority.js';
export { proxyAwareDispatcher } from './http.js';
export { DEFAULT_CHUNK_SIZE, DEFAULT_CONNECTIONS } from './plan.js';
export type { EngineOptions, EngineHooks, ChunkSource, ChunkSourceRequest, ChunkEvent } from './types.js';

/**
 * Fetch and verify every blob. Each result is a file under `opts.partialDir` whose SHA-256 (or
 * git blob id) matched; the caller renames it into the content store, then calls `forgetBlob`.
 * Identical keys are fetched once. Rejects with the SwiftFetchError classes (exit codes 3-7).
 */
export async function fetchBlobs(requests: BlobRequest[], opts: EngineOptions): Promise<FetchedBlob[]> {
  if (requests.length === 0) return [];
  return new Engine(opts).run(requests);
}

/** Drop the resume rows of blobs (after they were stored). Safe to call for unknown keys. */
export function forgetBlobs(keys: Iterable<BlobKey>, opts: { stateDir: string }): void {
  // One open of the database for all: opening it per blob cost ~3 ms each.
  const st = ResumeState.acquire(opts.stateDir);
  try {
    for (const key of keys) st.forget(formatBlobKey(key));
  } finally {
    st.release();
  }
}

export function forgetBlob(key: BlobKey, opts: { stateDir: string }): void {
  forgetBlobs([key], opts);
}

/**
 * Which bytes of `key` are durable in its partial file right now, for serving finished chunks of
 * an in-progress download to peers. Undefined when this node holds no partial file for it (never
 * started, or already published and renamed away). The bytes are unverified until the whole file is.
 */
export async function completedRanges(
  stateDir: string,
  key: BlobKey,
): Promise<{ path: string; size: number; ranges: Array<[number, number]> } | undefined> {
  const id = formatBlobKey(key);
  const found = durableRanges(stateDir, id);
  if (!found) return undefined;
  const st = ResumeState.acquire(stateDir);
  try {
    const row = st.getBlob(id);
    const s = await stat(found.path, { bigint: true }).catch(() => undefined);
    if (!row || !s || row.fileId !== `${s.dev}:${s.ino}`) return undefined;
    return found;
  } finally {
    st.release();
  }
}
