/**
 * What a pull knows about where each file's bytes came from, written into the publish record:
 * the engine's byte events (origin, peer, replica) tallied per blob, and whether this pull fetched
 * the blob at all or found it already stored.
 */
import { blobKeyOf, formatBlobKey } from '../core/blob-key.js';
import type { FileEntry } from '../core/manifest.js';
import type { Hub } from '../core/ref.js';
import type { TransferEvent } from '../core/transfer.js';
import type { FileProvenance } from '../store/store.js';
import type { EngineHooks } from '../transfer/index.js';

export interface ProvenanceBase {
  hub: Hub;
  commit: string;
  /** The hub's base URL, credentials stripped. */
  endpoint: string;
  lock?: { file: string; sha256: string };
}

export class PullProvenance {
  private readonly bytes = new Map<string, { origin: number; peer: number; replica: number }>();
  private readonly fetched = new Set<string>();

  constructor(private readonly base: ProvenanceBase) {}

  /** `hooks` with every engine event also counted here. */
  wrap(hooks: EngineHooks | undefined): EngineHooks {
    return {
      ...hooks,
      onEvent: (e: TransferEvent) => {
        this.count(e);
        hooks?.onEvent?.(e);
      },
    };
  }

  private count(e: TransferEvent): void {
    if (e.type === 'progress') {
      const id = formatBlobKey(e.key);
      const b = this.bytes.get(id) ?? { origin: 0, peer: 0, replica: 0 };
      b[e.source] += e.bytes;
      this.bytes.set(id, b);
    } else if (e.type === 'blob-verified') {
      this.fetched.add(formatBlobKey(e.key));
    }
  }

  /**
   * Republishing content the store's record already holds: what the record knew, plus the lock
   * it was just checked against (when pinned).
   */
  reused(prev: FileProvenance | undefined, f: FileEntry, at: string): FileProvenance | undefined {
    if (!this.base.lock) return prev;
    return { ...(prev ?? this.of(f, at)), lock: this.base.lock };
  }

  /** Where `f` came from, as of its publish now. */
  of(f: FileEntry, at: string): FileProvenance {
    const id = formatBlobKey(blobKeyOf(f, this.base.commit));
    const out: FileProvenance = { via: this.fetched.has(id) ? 'download' : 'store', hub: this.base.hub, commit: this.base.commit, at, endpoint: this.base.endpoint };
    const bytes = this.bytes.get(id);
    if (out.via === 'download') out.bytes = bytes ?? { origin: 0, peer: 0, replica: 0 };
    if (this.base.lock) out.lock = this.base.lock;
    return out;
  }
}
