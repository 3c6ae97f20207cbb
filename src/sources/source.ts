import type { FileEntry, Manifest } from '../core/manifest.js';
import type { ModelRef } from '../core/ref.js';
import type { Origin } from '../core/transfer.js';
import type { ApiRetry } from './http.js';

/** A hub adapter: pins a ref to a commit with its full listing, and says where each file's bytes are. */
export interface Source {
  /** Human name of the hub and of the variable that holds its token, for error messages. */
  readonly hubName: string;
  readonly tokenVariable: string;
  /** Base URL actually used (after environment/flag resolution). */
  readonly endpoint: string;
  resolve(ref: ModelRef, signal?: AbortSignal): Promise<Manifest>;
  origin(manifest: Manifest, file: FileEntry): Origin;
}

/** What a caller hears from a source while it works (retries of its API calls). */
export interface SourceHooks {
  onRetry?: (r: ApiRetry) => void;
}

/** Percent-encode every path segment but keep the slashes, as both hubs expect in URLs. */
export function encodePath(p: string): string {
  return p.split('/').map(encodeURIComponent).join('/');
}
