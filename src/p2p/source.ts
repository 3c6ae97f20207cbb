/**
 * The engine's view of the swarm: a ChunkSource that gets a chunk from a peer, or says "origin".
 *
 * For each chunk request `[start, end)` of a blob:
 *  1. a live peer that already holds the range (finished blob or durable chunk) serves it;
 *  2. else, a peer already fetching exactly this piece from the origin is waited for;
 *  3. else the piece has an owner, chosen by rendezvous hashing over the nodes fetching this blob
 *     (this node included): if that is us, we answer undefined and the engine goes to the origin,
 *     otherwise we long-poll the owner until it has the piece.
 * Waiting is bounded (`maxWaitMs`), and every failure (peer gone, busy, wrong) re-evaluates or
 * falls back to the origin, so a slow, dead or lying peer costs time, never correctness.
 *
 * Nodes starting together must see each other before deciding, or each would think it alone and
 * fetch everything: the first decision for a blob waits `gatherMs` after announcing interest
 * (every status request says "I fetch this too"), and a node that joins late waits for pieces
 * already in flight elsewhere instead of duplicating them.
 */
import { createHash, randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import { sha256OfKey } from '../core/blob-key.js';
import type { TransferEvent } from '../core/transfer.js';
import type { ChunkEvent, ChunkSource, ChunkSourceRequest } from '../transfer/index.js';
import { BlameLedger } from './blame.js';
import type { BlobStatus, PeerClient, PeerView } from './client.js';
import type { P2PCounters } from './counters.js';
import type { Peer, PeerDiscovery } from './discovery.js';
import type { LocalInventory } from './inventory.js';
import { covers } from './ranges.js';
import { ownerOf, trackerRanking } from './rendezvous.js';
import { sleep } from '../core/sleep.js';

/** How long a peer may take to say what it holds of a blob. */
const STATUS_TIMEOUT_MS = 5_000;

export interface PeerChunkSourceOptions {
  nodeId: string;
  discovery: PeerDiscovery;
  client: PeerClient;
  inventory: LocalInventory;
  counters: P2PCounters;
  /** Longest a chunk waits for peers before the origin (default 20 s; keep it under the engine's stall timeout). */
  maxWaitMs?: number;
  /** One long-poll; membership is re-evaluated between them (default 5 s). */
  pollMs?: number;
  /** Peer status answers are reused this long (default 1 s). */
  statusTtlMs?: number;
  /** Pause before the first decision on a blob, so peers starting together see each other (default 150 ms). */
  gatherMs?: number;
  /** Blobs below this size never wait for a peer (default 1 MiB): one request to the origin is cheaper. */
  smallBlobBytes?: number;
  /**
   * Trackers per blob (default 3): with more peers than this, a node asks only the blob's trackers
   * (rendezvous-chosen) and whoever asked it, and learns the rest from their relayed views.
   */
  fanout?: number;
  logger?: Logger;
  /** Told of each quarantine. */
  onQuarantine?: (peer: Peer | { id: string }, reason: string) => void;
}

type StatusEntry = { at: number; value: Promise<BlobStatus | undefined | 'error'> };

export class PeerChunkSource implements ChunkSource {
  readonly name = 'peers';
  readonly blame = new BlameLedger();
  /** Bytes received per peer id (diagnostics; too many label values for a metric). */
  readonly bytesByPeer = new Map<string, number>();
  private readonly statusCache = new Map<string, StatusEntry>();
  private readonly decided = new Map<string, Promise<void>>();
  private readonly probePending = new Set<string>();
  private readonly inUse = new Map<string, number>();
  private readonly log: Logger | undefined;
  private readonly maxWaitMs: number;
  private readonly pollMs: number;
  private readonly statusTtlMs: number;
  private readonly gatherMs: number;
  private readonly smallBlobBytes: number;
  private readonly fanout: number;

  constructor(private readonly o: PeerChunkSourceOptions) {
    this.log = o.logger?.child({ module: 'p2p-source' });
    this.maxWaitMs = o.maxWaitMs ?? 20_000;
    this.pollMs = o.pollMs ?? 5_000;
    this.statusTtlMs = o.statusTtlMs ?? 1_000;
    this.gatherMs = o.gatherMs ?? 150;
    this.smallBlobBytes = o.smallBlobBytes ?? 1024 * 1024;
    this.fanout = Math.max(1, o.fanout ?? 3);
  }

  // ------------------------------------------------------------------ engine hooks

  /** Chain into the engine's `onEvent`. */
  onEvent = (e: TransferEvent): void => {
    const sha = sha256OfKey(e.key);
    if (!sha) return;
    switch (e.type) {
      case 'blob-start':
        // Started over (origin changed, or a fresh file): nothing advertised of it is valid.
        if (e.resumedBytes === 0) this.o.inventory.reset(sha);
        this.o.inventory.touchFetching(sha, e.size);
        void this.o.inventory.loadDurable(sha);
        this.probePending.add(sha);
        break;
      case 'progress':
        this.o.inventory.touchFetching(sha);
        break;
      case 'hash-mismatch': {
        this.o.inventory.reset(sha);
        const peers = this.blame.mismatch(sha);
        if (peers.length > 0) this.log?.warn({ blob: sha, peers }, 'blob failed its hash; suspending the peers that sent parts of it until the origin copy is checked');
        break;
      }
      case 'blob-verified': {
        const paths = [this.o.inventory.partialPath(sha), this.o.inventory.blobPath(sha)].filter((p): p is string => p !== undefined);
        this.o.inventory.doneFetching(sha);
        this.decided.delete(sha);
        this.invalidate(sha);
        this.announceComplete(sha, e.size);
        void this.blame.verified(sha, paths).then((v) => {
          for (const g of v?.guilty ?? []) {
            // Bad bytes from a finished blob are a lie or a rotten disk; from a download in progress
            // they may have been relayed in good faith from a liar, so that costs less, at first.
            const reason = `served bytes of ${sha} that do not match the verified file${g.finished ? '' : ' (from a download in progress)'}`;
            // g.peer is the address that sent the bytes (blame and quarantine never go by the id a peer reports).
            this.o.discovery.quarantine(g.peer, reason, g.finished ? 'severe' : 'mild');
            this.o.counters.add('quarantines');
            this.o.onQuarantine?.(this.o.discovery.at(g.peer) ?? { id: g.peer }, reason);
          }
        });
        break;
      }
    }
  };

  /** Chain into the engine's `onChunk`. */
  onChunk = (e: ChunkEvent): void => {
    this.o.inventory.noteChunk(e);
  };

  // ------------------------------------------------------------------ ChunkSource

  async fetch(req: ChunkSourceRequest): Promise<AsyncIterable<Uint8Array> | undefined> {
    const sha = req.sha256;
    // Peers serve by SHA-256 only; a blob known by its git id alone comes from the origin.
    if (!sha || !/^[0-9a-f]{64}$/.test(sha) || req.end <= req.start) return undefined;
    this.o.inventory.touchFetching(sha, req.size);
    if (this.blame.awaitingVerdict(sha)) return undefined;
    if (this.probePending.delete(sha) && !(req.start === 0 && req.end === req.size)) {
      // The blob's first request (the engine's probe) holds back the blob's other chunks until
      // it is answered. Answer at once with a stream that does the waiting, so the other chunks
      // start now; an empty stream sends the engine to the origin just the same.
      const self = this;
      return (async function* () {
        const s = await self.locate(sha, req);
        if (s) yield* s;
      })();
    }
    return this.locate(sha, req);
  }

  private async locate(sha: string, req: ChunkSourceRequest): Promise<AsyncIterable<Uint8Array> | undefined> {
    const { start, end } = req;
    const small = req.size < this.smallBlobBytes;
    const deadline = Date.now() + this.maxWaitMs;

    // The gather (first decision on a blob) asks fresh; later decisions use the short-lived cache.
    if (!small) await this.gather(sha, req.signal);
    for (;;) {
      req.signal.throwIfAborted();
      const peers = this.usablePeers();
      if (peers.length === 0) return this.origin(sha, req);
      const { statuses, interested } = this.withRelayed(sha, await this.statuses(sha, this.contacts(sha, peers), false, req.signal), peers);

      // 1. Someone has it now.
      const holders = peers.filter((p) => {
        const s = statuses.get(p.id);
        return s !== undefined && covers(s.ranges, start, end);
      });
      let busy = false;
      for (const p of this.leastUsed(holders)) {
        const r = await this.tryData(p, req, start, end, 0, statuses.get(p.id)!.complete);
        if (r === 'busy') busy = true;
        else if (r !== undefined) return r;
      }
      if (busy) {
        // The bytes exist in the swarm: a short wait for an upload slot beats the origin. (Retry-After
        // is whole seconds; uploads of a chunk between nodes take far less, so we come back sooner.)
        // The statuses are not asked again for it: they refresh within statusTtlMs anyway, and asking
        // on every 503 made control traffic grow with upload contention, that is with the swarm's size.
        if (Date.now() + 150 > deadline) return this.timeout(sha, req);
        await sleep(100 + randomInt(150), req.signal);
        continue;
      }
      if (small) return this.origin(sha, req);

      // 2. Someone is fetching this very piece from the origin: wait for it.
      // 3. Otherwise the piece's owner among the nodes fetching this blob.
      const inflight = peers.filter((p) => {
        const s = statuses.get(p.id);
        return s !== undefined && covers(s.inflight, start, end);
      });
      let ownerId: string | undefined;
      if (inflight.length > 0) ownerId = ownerOf(sha, req.end, inflight.map((p) => p.id));
      else {
        const members = [this.o.nodeId, ...peers.filter((p) => statuses.get(p.id)?.fetching || interested.has(p.id)).map((p) => p.id)];
        ownerId = ownerOf(sha, req.end, members);
      }
      if (ownerId === undefined || ownerId === this.o.nodeId) return this.origin(sha, req);
      const owner = peers.find((p) => p.id === ownerId)!;
      const left = deadline - Date.now();
      if (left <= 0) return this.timeout(sha, req);
      const asked = Date.now();
      const wait = Math.min(this.pollMs, left);
      const r = await this.tryData(owner, req, start, end, wait, false);
      if (r === 'busy') {
        // The owner is serving others: by now some of them may hold the piece and serve it too (the
        // statuses, at most statusTtlMs old, will say so).
        await sleep(50 + randomInt(150), req.signal);
        continue;
      }
      if (r !== undefined) return r;
      // An owner that answers "not yet" at once (its wait list is full) must not be hammered.
      if (Date.now() - asked < wait / 2) await sleep(100 + randomInt(150), req.signal);
    }
  }

  // ------------------------------------------------------------------ helpers

  private origin(sha: string, req: ChunkSourceRequest): undefined {
    this.o.inventory.addInflight(sha, req.start, req.end);
    return undefined;
  }

  private timeout(sha: string, req: ChunkSourceRequest): undefined {
    this.o.counters.add('peerTimeouts');
    this.log?.debug({ blob: sha, start: req.start, end: req.end }, 'no peer delivered in time; using the origin');
    return this.origin(sha, req);
  }

  private invalidate(sha: string): void {
    for (const k of this.statusCache.keys()) if (k.endsWith(`:${sha}`)) this.statusCache.delete(k);
  }

  private usablePeers(): Peer[] {
    return this.o.discovery.live().filter((p) => !this.blame.isSuspended(p.url));
  }

  private leastUsed(peers: Peer[]): Peer[] {
    return peers
      .map((p) => ({ p, n: (this.inUse.get(p.id) ?? 0) + Math.random() }))
      .sort((a, b) => a.n - b.n)
      .map((x) => x.p);
  }

  /**
   * Whom to ask about a blob. In a small swarm every peer. With more peers than `fanout`, only the
   * blob's trackers (the same few nodes for everyone): every asker tells them what it holds in
   * passing (the view header), so they know the whole swarm without asking anyone back, and relay
   * it. What a node asks stays flat as the cluster grows. (Asking back whoever asked us, the
   * earlier rule, made a tracker ask everyone and, through data requests, everyone ask everyone.)
   */
  private contacts(sha: string, peers: Peer[]): Peer[] {
    if (peers.length <= this.fanout) return peers;
    // Ranked over every peer known, live or not, and the first `fanout` usable ones taken: a peer
    // that one node saw fail shifts that node's trackers by one, not the whole ranking, so nodes
    // that disagree about who is up still share most trackers.
    const usable = new Map(peers.map((p) => [p.id, p]));
    const out: Peer[] = [];
    let counted = 0;
    for (const id of trackerRanking(sha, [this.o.nodeId, ...this.o.discovery.all().map((p) => p.id)])) {
      if (counted >= this.fanout) break;
      const p = usable.get(id);
      if (id === this.o.nodeId) counted++;
      else if (p) {
        out.push(p);
        counted++;
      }
    }
    return out;
  }

  /**
   * Direct answers plus what they relay: views of peers we did not ask (a direct answer wins) and
   * the ids of nodes that told them they fetch the blob.
   */
  private withRelayed(sha: string, direct: Map<string, BlobStatus | undefined>, peers: Peer[]): { statuses: Map<string, PeerView | undefined>; interested: Set<string> } {
    const statuses = new Map<string, PeerView | undefined>(direct);
    const interested = new Set<string>();
    const usable = new Set(peers.map((p) => p.id));
    const relay = (v: PeerView) => {
      if (v.nodeId !== this.o.nodeId && usable.has(v.nodeId) && !statuses.has(v.nodeId)) statuses.set(v.nodeId, v);
    };
    for (const s of direct.values()) {
      if (!s) continue;
      for (const id of s.interested) if (id !== this.o.nodeId) interested.add(id);
      for (const v of s.peers) relay(v);
    }
    // What askers told this node (a tracker hears the swarm this way) and holders heard of earlier.
    for (const v of this.o.inventory.peerViews(sha)) relay(v);
    for (const id of this.o.inventory.interestedPeers(sha)) interested.add(id);
    return { statuses, interested };
  }

  /**
   * Tell the blob's trackers this node now holds all of it: they relay it to late joiners long
   * after this node stopped asking (a finished node asks nothing more, so it tells nothing more).
   */
  private announceComplete(sha: string, size: number): void {
    const peers = this.usablePeers();
    if (peers.length === 0 || size <= 0) return;
    const own = { complete: true, ranges: [[0, size]] as Array<[number, number]>, inflight: [] };
    for (const p of this.contacts(sha, peers)) {
      this.o.counters.add('statusRequests');
      void this.o.client.status(p.url, sha, false, AbortSignal.timeout(STATUS_TIMEOUT_MS), own).catch(() => undefined);
    }
  }

  /** First decision on a blob: tell the peers we want it, give simultaneous starters a moment. */
  private async gather(sha: string, signal: AbortSignal): Promise<void> {
    let p = this.decided.get(sha);
    if (!p) {
      const peers = this.usablePeers();
      const announce = () => this.statuses(sha, this.contacts(sha, peers), true, signal);
      // With trackers, what others announced during the pause is known only to them: ask again.
      const settle = async () => {
        if (peers.length <= this.fanout) return;
        const { statuses, interested } = this.withRelayed(sha, await announce(), peers);
        const known = interested.size > 0 || [...statuses.values()].some((s) => s && (s.fetching || s.ranges.length > 0));
        // The trackers know of no one holding or fetching it: a holder may have finished before
        // they heard of it (or before they were its trackers). Ask everyone, once per blob.
        if (!known) await this.statuses(sha, peers, true, signal);
      };
      p = peers.length === 0 ? Promise.resolve() : announce().then(() => sleep(this.gatherMs, signal)).then(settle);
      p = p.catch(() => undefined);
      this.decided.set(sha, p);
    }
    await p;
  }

  private async statuses(sha: string, peers: Peer[], fresh: boolean, signal: AbortSignal): Promise<Map<string, BlobStatus | undefined>> {
    const now = Date.now();
    const out = new Map<string, BlobStatus | undefined>();
    await Promise.all(
      peers.map(async (p) => {
        const k = `${p.id}:${sha}`;
        let e = this.statusCache.get(k);
        if (!e || fresh || now - e.at > this.statusTtlMs) {
          e = {
            at: now,
            // Shared by every task that asks within the ttl: bound it by time, not by the first
            // asker's signal, or one cancelled pull would mark healthy peers as failed for all.
            value: this.o.client.status(p.url, sha, true, AbortSignal.timeout(STATUS_TIMEOUT_MS), this.o.inventory.ownView(sha)).then(
              (s) => {
                if (s && s.nodeId !== p.id) return 'error';
                // Kept to relay to whoever asks us (trackers are asked by everyone).
                if (s) this.o.inventory.notePeerView(sha, { nodeId: s.nodeId, complete: s.complete, fetching: s.fetching, ranges: s.ranges, inflight: s.inflight });
                return s;
              },
              () => 'error' as const,
            ),
          };
          this.o.counters.add('statusRequests');
          this.statusCache.set(k, e);
        }
        const v = await e.value;
        if (v === 'error') {
          this.statusCache.delete(k);
          if (!signal.aborted) {
            this.o.counters.add('peerErrors');
            this.o.discovery.markFailed(p.id);
          }
          return;
        }
        out.set(p.id, v);
      }),
    );
    return out;
  }

  /** One data request: a stream, 'busy', or undefined (not there / failed). */
  private async tryData(p: Peer, req: ChunkSourceRequest, start: number, end: number, waitMs: number, finished: boolean): Promise<AsyncIterable<Uint8Array> | 'busy' | undefined> {
    const sha = req.sha256!;
    let r;
    try {
      r = await this.o.client.data(p.url, sha, start, end, { waitMs, signal: req.signal, fetching: true, expectNode: p.id });
    } catch (e) {
      if (req.signal.aborted) throw req.signal.reason;
      this.o.counters.add('peerErrors');
      this.o.discovery.markFailed(p.id);
      this.statusCache.delete(`${p.id}:${sha}`);
      this.log?.debug({ peer: p.id, err: (e as Error).message }, 'peer request failed');
      return undefined;
    }
    if (r.kind === 'busy') return 'busy';
    if (r.kind === 'missing') {
      this.o.inventory.forgetPeerView(sha, p.id);
      if (r.status) this.statusCache.set(`${p.id}:${sha}`, { at: Date.now(), value: Promise.resolve(r.status) });
      return undefined;
    }
    return this.track(p, req, start, r.body, finished);
  }

  /**
   * Count, hash (for blame) and release the body, however the engine stops reading it. A peer that
   * fails mid-body (reset, silence, a short body) is marked down and the rest of the piece is
   * located again: from another peer, or waited for from the node now fetching it. Only when that
   * decision is "origin" does the stream fail, and the engine fetches the rest itself. (Failing at
   * once sent every node that was copying the piece from the lost peer to the origin for its rest:
   * a second copy of those pieces.)
   */
  private track(p: Peer, req: ChunkSourceRequest, start: number, body: AsyncIterable<Uint8Array> & { destroy(err?: Error): void }, finished: boolean): AsyncIterable<Uint8Array> {
    const self = this;
    self.inUse.set(p.id, (self.inUse.get(p.id) ?? 0) + 1);
    return (async function* () {
      const h = createHash('sha256');
      let n = 0;
      let failed: unknown;
      try {
        for await (const c of body) {
          h.update(c);
          n += c.length;
          self.o.counters.add('bytesFromPeers', c.length);
          yield c;
        }
        if (start + n < req.end) failed = new Error(`peer ${p.id} ended its body after ${n} bytes`);
      } catch (e) {
        if (req.signal.aborted) throw e;
        failed = e;
      } finally {
        body.destroy();
        self.inUse.set(p.id, Math.max(0, (self.inUse.get(p.id) ?? 1) - 1));
        self.blame.record(req.sha256!, p.url, start, n, h.digest('hex'), finished);
        if (n > 0) self.bytesByPeer.set(p.id, (self.bytesByPeer.get(p.id) ?? 0) + n);
      }
      if (failed === undefined) return;
      self.o.counters.add('peerErrors');
      self.o.discovery.markFailed(p.id);
      self.statusCache.delete(`${p.id}:${req.sha256!}`);
      const rest = await self.locate(req.sha256!, { ...req, start: start + n });
      if (!rest) throw failed;
      yield* rest;
    })();
  }
}

