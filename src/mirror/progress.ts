/**
 * What this process's transfer engines are doing to each blob, for clients reading a blob while
 * it downloads. Fed by the engine hooks of every fetch in the daemon (the mirror's own and the
 * reconciler's pulls): which byte ranges are durable in which partial file, whether the whole
 * file verified, and when its bytes stopped counting (a hash mismatch or a restart starts a new
 * generation: whatever a reader sent of the old one can no longer be trusted).
 */
import { formatBlobKey, type BlobKey } from '../core/blob-key.js';
import { KeyedWakeups } from '../core/wakeups.js';
import type { TransferEvent } from '../core/transfer.js';
import { addRange, type Range } from '../p2p/ranges.js';
import { completedRanges, type ChunkEvent } from '../transfer/index.js';

export interface BlobProgressState {
  readonly key: BlobKey;
  /** The key's written form: what the maps here are keyed by. */
  readonly id: string;
  /** Bumped whenever earlier bytes stop counting. */
  generation: number;
  path: string | undefined;
  ranges: Range[];
  verified: boolean;
  /** Set when the fetch gave up: readers stop. */
  failed: Error | undefined;
  /** When bytes of this blob last failed verification (clients resuming since may hold bad bytes). */
  mismatchAt: number | undefined;
  updatedAt: number;
}

/** Entries that verified or failed are dropped this long after (readers then find the store). */
const KEEP_MS = 5 * 60_000;

export class BlobProgress {
  private readonly blobs = new Map<string, BlobProgressState>();
  private readonly wakeups = new KeyedWakeups();
  private events = 0;

  constructor(private readonly stateDir: string) {}

  /** Engine hooks to chain into every fetch (`EngineHooks.onEvent` / `onChunk`). */
  readonly tap = {
    onEvent: (e: TransferEvent): void => this.onEvent(e),
    onChunk: (e: ChunkEvent): void => this.onChunk(e),
  };

  get(key: BlobKey): BlobProgressState | undefined {
    return this.blobs.get(formatBlobKey(key));
  }

  /** The fetch of `key` ended without a verified file. */
  fail(key: BlobKey, error: Error): void {
    const s = this.state(key);
    s.failed = error;
    this.changed(s);
  }

  /** A new fetch of `key` starts: forget a failure of an earlier one. */
  begin(key: BlobKey): void {
    const s = this.blobs.get(formatBlobKey(key));
    if (s?.failed) {
      s.failed = undefined;
      s.generation++;
      s.ranges = [];
      this.changed(s);
    }
  }

  /** Resolve on the next change to `key`, after `ms`, or when `signal` aborts. */
  wait(key: BlobKey, ms: number, signal?: AbortSignal): Promise<void> {
    return this.wakeups.wait(formatBlobKey(key), ms, signal);
  }

  private state(key: BlobKey): BlobProgressState {
    const id = formatBlobKey(key);
    let s = this.blobs.get(id);
    if (!s) this.blobs.set(id, (s = { key, id, generation: 0, path: undefined, ranges: [], verified: false, failed: undefined, mismatchAt: undefined, updatedAt: Date.now() }));
    return s;
  }

  private onEvent(e: TransferEvent): void {
    if (e.type === 'blob-start') {
      const s = this.state(e.key);
      // A second start of a file we followed means the engine threw its bytes away.
      if (s.ranges.length > 0 || s.verified) s.generation++;
      s.ranges = [];
      s.verified = false;
      s.failed = undefined;
      this.changed(s);
      // Chunks a resumed download already had produce no chunk events: read them once.
      if (e.resumedBytes > 0) void this.loadDurable(s, s.generation);
    } else if (e.type === 'hash-mismatch') {
      const s = this.state(e.key);
      s.generation++;
      s.mismatchAt = Date.now();
      s.ranges = [];
      this.changed(s);
    } else if (e.type === 'blob-verified') {
      const s = this.state(e.key);
      s.verified = true;
      this.changed(s);
    }
  }

  private onChunk(e: ChunkEvent): void {
    const s = this.state(e.key);
    if (s.path !== e.path) {
      s.path = e.path;
      s.ranges = [];
    }
    s.ranges = addRange(s.ranges, e.start, e.end);
    this.changed(s);
  }

  private async loadDurable(s: BlobProgressState, generation: number): Promise<void> {
    const found = await completedRanges(this.stateDir, s.key).catch(() => undefined);
    if (!found || s.generation !== generation) return;
    if (s.path !== undefined && s.path !== found.path) return;
    s.path = found.path;
    for (const [a, b] of found.ranges) s.ranges = addRange(s.ranges, a, b);
    this.changed(s);
  }

  private changed(s: BlobProgressState): void {
    s.updatedAt = Date.now();
    this.wakeups.wake(s.id);
    if (++this.events % 256 === 0) this.sweep();
  }

  private sweep(): void {
    const old = Date.now() - KEEP_MS;
    for (const [k, s] of this.blobs) if ((s.verified || s.failed) && s.updatedAt < old && (s.mismatchAt ?? 0) < old && !this.wakeups.has(k)) this.blobs.delete(k);
  }
}

/** End of the durable run of bytes that starts at `pos` (pos itself when none). */
export function durableEnd(ranges: readonly Range[], pos: number): number {
  for (const [a, b] of ranges) if (a <= pos && b > pos) return b;
  return pos;
}
