/**
 * The seam between sources (who know URLs and hashes), the transfer engine (who moves and verifies
 * bytes) and the store (who publishes verified blobs). Pure types: no I/O here.
 */
import type { BlobKey } from './blob-key.js';

/** Where a blob's bytes come from at the origin. */
export interface Origin {
  /**
   * The hub URL to GET (HF `resolve/{commit}/{path}`, ModelScope `repo?FilePath=`). It may answer
   * 302 to a CDN host with a signed URL that expires; re-requesting this URL re-signs it.
   */
  url: string;
  /**
   * Headers sent only to the host of `url` (typically `authorization`, ModelScope's cookie).
   * The engine must drop them on every other host: CDNs, proxies' targets, peers.
   */
  hubHeaders: Record<string, string>;
  /**
   * For origins that authorize each request by signing it (S3, SigV4): the headers to add to one
   * GET of `url` on the origin's host; never called for another host. Signing each request means no
   * URL carries a credential (nothing to leak into a log), and expiring credentials are refreshed
   * by the signer instead of failing a long transfer.
   */
  sign?: (req: { url: string; headers: Record<string, string> }) => Promise<Record<string, string>>;
  /** What to tell the user when the origin refuses the credentials (default: the hub token variables). */
  authHint?: string;
}

/** One blob to fetch and verify. */
export interface BlobRequest {
  /** Stable identity across runs, used for resume state and dedup. */
  key: BlobKey;
  /** Human label for progress and errors (the repo path). */
  label: string;
  size: number;
  /** Expected SHA-256 (hex) when the hub gives one. */
  sha256?: string;
  /** Expected git blob SHA-1 (hex), used when no SHA-256 is known. */
  gitOid?: string;
  origin: Origin;
}

/** A blob whose bytes are on disk in the store's partial area and verified. */
export interface FetchedBlob {
  key: BlobKey;
  /** Absolute path of the verified file (inside the store's internal folder, same filesystem). */
  path: string;
  /** SHA-256 computed over the bytes (always computed, so the store can content-address it). */
  sha256: string;
  size: number;
}

/** Where bytes came from: the hub (or bucket) itself, a peer node, or a bucket replica of a hub. */
export type ByteSource = 'origin' | 'peer' | 'replica';

export type TransferEvent =
  | { type: 'blob-start'; key: BlobKey; label: string; size: number; resumedBytes: number }
  | { type: 'progress'; key: BlobKey; bytes: number; source: ByteSource }
  /** `attempt` counts failures in a row (progress earns them back); the blob fails after `of`. */
  | { type: 'retry'; key: BlobKey; label: string; attempt: number; of: number; delayMs: number; reason: string }
  | { type: 'hash-mismatch'; key: BlobKey; label: string; expected: string; found: string }
  | { type: 'blob-verified'; key: BlobKey; label: string; size: number };
