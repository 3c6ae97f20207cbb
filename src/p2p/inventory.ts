import { stat } from 'node:fs/promises';
import { sha256Key, sha256OfKey } from '../core/blob-key.js';
import { KeyedWakeups } from '../core/wakeups.js';
import type { ChunkEvent } from '../transfer/index.js';
import { completedRanges } from '../transfer/index.js';
import type { PeerView } from './client.js';
import { addRange, covers, normalize, type Range } from './ranges.js';

/** How long "I am fetching this blob" holds without any sign of activity (a pull that died quietly). */
const FETCHING_TTL_MS = 60_000;
/** A range this node went to the origin for and never finished is forgotten after this. */
const INFLIGHT_TTL_MS = 5 * 60_000;
/** How long a peer's "I am fetching it too" (told while asking us) counts. */
const INTEREST_TTL_MS = 30_000;
/** A relayed view older than this is not passed on (ranges only grow; in-flight pieces move). */
const VIEW_TTL_MS = 3_000;
/**
 * A holder of the whole blob, relayed this long: a node that finished stops asking (and so stops
 * telling), and late joiners learn about it from the trackers it told when it finished.
 */
const COMPLETE_VIEW_TTL_MS = 10 * 60_000;
/** Fallback poll for waiters when no chunk events arrive (the engine hook is not wired). */
const WAIT_POLL_MS = 500;

export interface BlobStore {
  /** Path of a finished, verified blob in the content store. */
  blobPath(sha256: string): string;
}

/** What this node holds of one blob, as the peer API reports it. */
export interface LocalHolding {
  complete: boolean;
  size: number | undefined;
  /** File to read the ranges from (a finished blob or the partial file of a download). */
  path: string | undefined;
  ranges: Range[];
}

interface Fetching {
  size: number | undefined;
  seen: number;
  /** Ranges this node is getting from the origin right now (the pieces it owns). */
  inflight: Map<string, { start: number; end: number; at: number }>;
}

/**
 * This node's side of the swarm: finished blobs (the content store), durable chunks of downloads
 * in progress (the engine's resume state plus its chunk events), what it is fetching, which
 * pieces it is fetching from the origin, and which peers said they want a blob too.
 */
export class LocalInventory {
  private readonly fetching = new Map<string, Fetching>();
  private readonly chunks = new Map<string, { path: string; ranges: Range[] }>();
  private readonly interest = new Map<string, Map<string, number>>();
  /** What peers answered about each blob, kept briefly to relay to askers (status `peers`). */
  private readonly views = new Map<string, Map<string, { at: number; view: PeerView }>>();
  private readonly wakeups = new KeyedWakeups();
  /** Sizes of blobs seen, so a partial download can be described after its fetch ended. */
  private readonly sizes = new Map<string, number>();

  constructor(private readonly deps: { store: BlobStore; stateDir: string }) {}

  // ------------------------------------------------------------- what this node is doing

  touchFetching(sha: string, size?: number): void {
    if (size !== undefined) this.sizes.set(sha, size);
    const f = this.fetching.get(sha);
    if (f) {
      f.seen = Date.now();
      if (size !== undefined) f.size = size;
    } else this.fetching.set(sha, { size, seen: Date.now(), inflight: new Map() });
  }

  doneFetching(sha: string): void {
    this.fetching.delete(sha);
    this.wake(sha);
  }

  isFetching(sha: string): boolean {
    const f = this.fetching.get(sha);
    if (!f) return false;
    if (Date.now() - f.seen > FETCHING_TTL_MS) {
      this.fetching.delete(sha);
      return false;
    }
    return true;
  }

  /** This node is getting `[start, end)` from the origin: peers wait for it instead of duplicating it. */
  addInflight(sha: string, start: number, end: number): void {
    this.touchFetching(sha);
    this.fetching.get(sha)!.inflight.set(`${start}-${end}`, { start, end, at: Date.now() });
  }

  inflight(sha: string): Range[] {
    const f = this.fetching.get(sha);
    if (!f) return [];
    const now = Date.now();
    const out: Range[] = [];
    for (const [k, r] of f.inflight) {
      if (now - r.at > INFLIGHT_TTL_MS) f.inflight.delete(k);
      else out.push([r.start, r.end]);
    }
    return normalize(out);
  }

  /** A chunk became durable (the engine's `onChunk`). */
  noteChunk(e: ChunkEvent): void {
    const sha = sha256OfKey(e.key);
    if (!sha) return;
    const cur = this.chunks.get(sha);
    const ranges = cur && cur.path === e.path ? addRange(cur.ranges, e.start, e.end) : [[e.start, e.end] as Range];
    this.chunks.set(sha, { path: e.path, ranges });
    const f = this.fetching.get(sha);
    if (f) {
      f.seen = Date.now();
      for (const [k, r] of f.inflight) if (covers(ranges, r.start, r.end)) f.inflight.delete(k);
    }
    this.wake(sha);
  }

  /** The partial file of `sha` was reset (hash mismatch): nothing held of it is valid any more. */
  reset(sha: string): void {
    this.chunks.delete(sha);
    this.fetching.get(sha)?.inflight.clear();
  }

  blobPath(sha: string): string {
    return this.deps.store.blobPath(sha);
  }

  /** The partial path last reported for `sha` (for re-reading verified bytes). */
  partialPath(sha: string): string | undefined {
    return this.chunks.get(sha)?.path;
  }

  // ------------------------------------------------------------- what peers told us

  noteInterest(sha: string, peerId: string): void {
    let m = this.interest.get(sha);
    if (!m) this.interest.set(sha, (m = new Map()));
    m.set(peerId, Date.now());
  }

  /** Remember what `view.nodeId` said about `sha` (relayed to others for VIEW_TTL_MS). */
  notePeerView(sha: string, view: PeerView): void {
    let m = this.views.get(sha);
    if (!m) this.views.set(sha, (m = new Map()));
    m.set(view.nodeId, { at: Date.now(), view });
  }

  /** Fresh views of `sha` heard from peers (not older than VIEW_TTL_MS). */
  peerViews(sha: string): PeerView[] {
    const m = this.views.get(sha);
    if (!m) return [];
    const now = Date.now();
    const out: PeerView[] = [];
    for (const [id, e] of m) {
      if (now - e.at > (e.view.complete ? COMPLETE_VIEW_TTL_MS : VIEW_TTL_MS)) m.delete(id);
      else out.push(e.view);
    }
    if (m.size === 0) this.views.delete(sha);
    return out;
  }

  /** A peer proved wrong about `sha` (it answered that it does not hold what it was said to). */
  forgetPeerView(sha: string, peerId: string): void {
    this.views.get(sha)?.delete(peerId);
  }

  /** What this node holds of a download in progress, for pushing with status requests (no disk access). */
  ownView(sha: string): { complete: boolean; ranges: Range[]; inflight: Range[] } {
    return { complete: false, ranges: this.chunks.get(sha)?.ranges ?? [], inflight: this.inflight(sha) };
  }

  /** Peers that recently told us (by asking) that they fetch `sha` too. */
  interestedPeers(sha: string): string[] {
    const m = this.interest.get(sha);
    if (!m) return [];
    const now = Date.now();
    const out: string[] = [];
    for (const [id, at] of m) {
      if (now - at > INTEREST_TTL_MS) m.delete(id);
      else out.push(id);
    }
    if (m.size === 0) this.interest.delete(sha);
    return out;
  }

  // ------------------------------------------------------------- what this node holds

  /**
   * Load the chunks a resumed download already had (they produce no chunk events). Called when
   * the engine opens the blob; later chunks arrive through `noteChunk`. Reading the resume
   * database on every peer request instead would cost a SQLite open per request on a busy node.
   */
  async loadDurable(sha: string): Promise<void> {
    let durable: Awaited<ReturnType<typeof completedRanges>>;
    try {
      durable = await completedRanges(this.deps.stateDir, sha256Key(sha));
    } catch {
      return;
    }
    if (!durable || durable.ranges.length === 0) return;
    const mem = this.chunks.get(sha);
    if (mem && mem.path !== durable.path) return;
    this.chunks.set(sha, { path: durable.path, ranges: normalize([...(mem?.ranges ?? []), ...durable.ranges]) });
    this.wake(sha);
  }

  async holding(sha: string): Promise<LocalHolding> {
    const blob = this.deps.store.blobPath(sha);
    const st = await stat(blob).catch(() => undefined);
    if (st?.isFile()) {
      this.chunks.delete(sha);
      return { complete: true, size: st.size, path: blob, ranges: st.size > 0 ? [[0, st.size]] : [] };
    }
    const mem = this.chunks.get(sha);
    const size = this.fetching.get(sha)?.size ?? this.sizes.get(sha);
    if (mem) return { complete: false, size, path: mem.path, ranges: mem.ranges };
    return { complete: false, size, path: undefined, ranges: [] };
  }

  /** Resolve true once `[start, end)` is held, false when `ms` passes or `signal` aborts first. */
  async waitFor(sha: string, start: number, end: number, ms: number, signal?: AbortSignal): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      const h = await this.holding(sha);
      if (covers(h.ranges, start, end)) return true;
      const left = deadline - Date.now();
      if (left <= 0 || signal?.aborted) return false;
      // Nobody here is going to produce it: no point holding the caller.
      if (!this.isFetching(sha)) return false;
      await this.wakeups.wait(sha, Math.min(left, WAIT_POLL_MS), signal);
    }
  }

  private wake(sha: string): void {
    this.wakeups.wake(sha);
  }
}
