/**
 * The peer API, mounted on the daemon's router under `/v1/peer/`. Content is addressed by SHA-256
 * only; a path never reaches this code. Every route needs the shared peer token.
 *
 *   GET /v1/peer/info                     -> { nodeId, protocol }
 *   GET /v1/peer/blobs/{sha256}           -> { nodeId, sha256, size, complete, fetching, ranges, inflight } | 404
 *   GET /v1/peer/blobs/{sha256}/data      Range: bytes=a-b  [?wait=ms]  -> 206 bytes | 404 | 416 | 503
 *
 * `wait` long-polls: when this node is still fetching the blob, the request is held until the
 * range is durable here (or the wait ends, then 404 with the status body). Waiting requests hold
 * no upload slot; only streaming ones do. Past `uploadConcurrency` a request waits in a short
 * line (1 s), then gets 503 with Retry-After, so serving peers never takes more than its budget
 * (slots and `uploadMaxRate`) from the node's own work.
 */
import { setMaxListeners } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { open, type FileHandle } from 'node:fs/promises';
import type { Logger } from 'pino';
import { RateLimiter } from '../transfer/index.js';
import type { P2PCounters } from './counters.js';
import { drained, readJson, sendJson } from '../http/respond.js';
import { MAX_BACKOFF_MS, type OriginBackoff } from '../core/origin-backoff.js';
import type { LocalHolding, LocalInventory } from './inventory.js';
import { covers, isRangeList, parseWantedRange, type Range as Span } from './ranges.js';
import type { PeerToken } from './token.js';

/** Entries relayed in one status, at most (a 256-node cluster fits). */
export const MAX_RELAYED = 512;
export const PEER_PROTOCOL = 1;
export const NODE_HEADER = 'x-swift-fetch-node';
export const FETCHING_HEADER = 'x-swift-fetch-fetching';
/**
 * What an asker holds of the blob, sent with its status request (`{"complete","ranges","inflight"}`,
 * at most MAX_VIEW_HEADER bytes): the node asked learns the asker's state without asking back, so
 * a blob's trackers relay the whole swarm while each node asks only them (docs/p2p.md, "Control traffic").
 */
export const VIEW_HEADER = 'x-swift-fetch-view';
export const MAX_VIEW_HEADER = 4096;
const SHA_RE = /^[0-9a-f]{64}$/;
const READ_SIZE = 256 * 1024;
/** Longest long-poll a peer may ask for. */
const MAX_WAIT_MS = 30_000;
/** Longest a request waits in line for an upload slot before 503. */
const QUEUE_MS = 1_000;
/** An upload whose peer takes no bytes this long is ended (twice the client's 5 s body timeout). */
const UPLOAD_STALL_MS = 10_000;

/** The slice of the daemon's Router this module needs (structural, so p2p does not import daemon). */
export interface RouteRegistrar {
  add(method: string, pattern: string, handler: (ctx: { req: IncomingMessage; res: ServerResponse; params: Record<string, string>; url: URL }) => void | Promise<void>): unknown;
}

export interface PeerServerDeps {
  /** Where pauses that peers pass on are noted (POST /v1/peer/backoff); without it the route is 404. */
  originBackoff?: OriginBackoff;
  nodeId: string;
  token: PeerToken;
  inventory: LocalInventory;
  counters: P2PCounters;
  /** Bytes per second served to peers, over all uploads; 0 = unlimited. */
  uploadMaxRate?: number;
  /** Uploads streaming at once; more get 503 + Retry-After. Default 4. */
  uploadConcurrency?: number;
  /** Long-polls held at once; more are answered at once. Default 256. */
  maxWaiters?: number;
  logger?: Logger;
}

export interface PeerServer {
  /** The upload token bucket (its rate can change at run time). */
  readonly uploadLimiter: RateLimiter;
  readonly activeUploads: number;
  /** Abort held long-polls and uploads (daemon shutdown). */
  close(): void;
}

type Range = { start: number; end: number };

/**
 * Upload slots: at most `max` uploads stream at once. Past that a request waits briefly in line (a
 * chunk between nodes streams in well under QUEUE_MS, and a peer sent away would come back anyway);
 * a full line, or a daemon shutting down, is refused at once.
 */
class UploadSlots {
  private active = 0;
  private readonly queue: Array<(ok: boolean) => void> = [];
  constructor(private readonly max: number, private readonly shutdown: AbortSignal) {}

  get inUse(): number {
    return this.active;
  }

  acquire(res: ServerResponse): Promise<boolean> {
    if (this.active < this.max) {
      this.active++;
      return Promise.resolve(true);
    }
    if (this.queue.length >= this.max * 4 || this.shutdown.aborted) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        res.off('close', gone);
        const i = this.queue.indexOf(done);
        if (i >= 0) this.queue.splice(i, 1);
        resolve(ok);
      };
      const gone = () => done(false);
      const timer = setTimeout(() => done(false), QUEUE_MS);
      res.once('close', gone);
      this.queue.push(done);
    });
  }

  release(): void {
    const next = this.queue.shift();
    // The slot passes straight to the next in line.
    if (next) next(true);
    else this.active--;
  }
}

/** The routes' shared state and the steps each route is made of. */
class PeerApi {
  readonly limiter: RateLimiter;
  readonly slots: UploadSlots;
  /** Every held long-poll and every upload waiting on a slow socket listens here. */
  readonly shutdown = new AbortController();
  private readonly log: Logger | undefined;
  private readonly maxWaiters: number;
  private waiting = 0;

  constructor(private readonly deps: PeerServerDeps) {
    this.log = deps.logger?.child({ module: 'p2p-server' });
    this.limiter = new RateLimiter(deps.uploadMaxRate ?? 0);
    this.maxWaiters = Math.max(0, deps.maxWaiters ?? 256);
    // Dozens of listeners at once are normal in a swarm, not a leak (each removes its own when it ends).
    setMaxListeners(0, this.shutdown.signal);
    this.slots = new UploadSlots(Math.max(1, deps.uploadConcurrency ?? 4), this.shutdown.signal);
  }

  /** The shared peer token, or 401 (counted). */
  authorized(req: IncomingMessage, res: ServerResponse): boolean {
    if (this.deps.token.accepts(req.headers.authorization)) return true;
    this.deps.counters.add('unauthorized');
    sendJson(res, 401, { error: 'peer token required' }, { 'www-authenticate': 'Bearer realm="swift-fetch-peers"' });
    return false;
  }

  /** The route's SHA-256 when it is one (noting which peer is fetching it), else 400. */
  blobSha(req: IncomingMessage, res: ServerResponse, sha: string): string | undefined {
    if (!SHA_RE.test(sha)) {
      sendJson(res, 400, { error: 'expected a lowercase hex SHA-256' });
      return undefined;
    }
    const peer = req.headers[NODE_HEADER];
    if (typeof peer === 'string' && peer !== this.deps.nodeId && /^[\w.-]{1,64}$/.test(peer) && req.headers[FETCHING_HEADER] === '1') {
      this.deps.inventory.noteInterest(sha, peer);
      const view = parseViewHeader(req.headers[VIEW_HEADER]);
      if (view) this.deps.inventory.notePeerView(sha, { nodeId: peer, fetching: !view.complete, ...view });
    }
    return sha;
  }

  async status(sha: string) {
    const { inventory, nodeId } = this.deps;
    const h = await inventory.holding(sha);
    const fetching = !h.complete && inventory.isFetching(sha);
    // Who else fetches it and what they hold, as this node last heard: askers learn the swarm from
    // a few nodes instead of asking every peer (docs/p2p.md, "Control traffic").
    const interested = inventory.interestedPeers(sha).slice(0, MAX_RELAYED);
    const peers = inventory.peerViews(sha).slice(0, MAX_RELAYED);
    return { h, body: { nodeId, sha256: sha, size: h.size ?? null, complete: h.complete, fetching, ranges: h.ranges, inflight: fetching ? inventory.inflight(sha) : [], interested, peers } };
  }

  /** Whether a `wait` long-poll is worth holding: the range is not here yet, and this node is fetching it. */
  shouldWait(sha: string, have: LocalHolding, want: Range | undefined, waitMs: number): want is Range {
    return waitMs > 0 && want !== undefined && !covers(have.ranges, want.start, want.end) && this.deps.inventory.isFetching(sha) && this.waiting < this.maxWaiters;
  }

  /**
   * Hold the request until `want` is durable here, the wait ends, the peer hangs up or the daemon
   * stops. False when the request is gone (the response was destroyed).
   */
  async holdUntilDurable(res: ServerResponse, sha: string, want: Range, waitMs: number): Promise<boolean> {
    this.waiting++;
    const ac = new AbortController();
    const stop = () => ac.abort();
    res.once('close', stop);
    this.shutdown.signal.addEventListener('abort', stop, { once: true });
    try {
      await this.deps.inventory.waitFor(sha, want.start, want.end, waitMs, ac.signal);
    } finally {
      this.waiting--;
      res.off('close', stop);
      this.shutdown.signal.removeEventListener('abort', stop);
    }
    if (!ac.signal.aborted) return true;
    if (!res.headersSent) res.destroy();
    return false;
  }

  /** `GET /v1/peer/blobs/{sha}/data`: the bytes of a range this node holds durably. */
  async data(req: IncomingMessage, res: ServerResponse, sha: string, url: URL): Promise<void> {
    const rawRange = req.headers.range;
    const waitMs = Math.min(MAX_WAIT_MS, Math.max(0, Number(url.searchParams.get('wait') ?? 0) || 0));
    let h = await this.deps.inventory.holding(sha);
    let want = parseWantedRange(rawRange, h.size);
    if (want === 'invalid') return sendJson(res, 416, { error: 'unsatisfiable range' }, h.size !== undefined ? { 'content-range': `bytes */${h.size}` } : {});
    if (this.shouldWait(sha, h, want, waitMs)) {
      if (!(await this.holdUntilDurable(res, sha, want, waitMs))) return;
      h = await this.deps.inventory.holding(sha);
    }
    if (h.size === undefined || h.path === undefined) return sendJson(res, 404, (await this.status(sha)).body);
    want = parseWantedRange(rawRange, h.size) ?? { start: 0, end: h.size };
    if (want === 'invalid') return sendJson(res, 416, { error: 'unsatisfiable range' }, { 'content-range': `bytes */${h.size}` });
    if (!covers(h.ranges, want.start, want.end)) return sendJson(res, 404, (await this.status(sha)).body);
    if (!(await this.slots.acquire(res))) {
      this.deps.counters.add('uploadsRejected');
      return sendJson(res, 503, { error: 'upload slots busy' }, { 'retry-after': '1' });
    }
    try {
      await this.serveFile(req, res, sha, h.path, h.size, want, rawRange !== undefined);
    } finally {
      this.slots.release();
    }
  }

  async serveFile(req: IncomingMessage, res: ServerResponse, sha: string, path: string, size: number, want: Range, ranged: boolean): Promise<void> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      // Renamed into the store between the lookup and now: the store copy is the same bytes.
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        const h = await this.deps.inventory.holding(sha);
        if (h.path && h.path !== path && covers(h.ranges, want.start, want.end)) return this.serveFile(req, res, sha, h.path, size, want, ranged);
        return sendJson(res, 404, { error: 'gone' });
      }
      throw e;
    }
    const headers: Record<string, string> = {
      'content-type': 'application/octet-stream',
      'content-length': String(want.end - want.start),
      'cache-control': 'no-store',
      [NODE_HEADER]: this.deps.nodeId,
    };
    if (ranged) headers['content-range'] = `bytes ${want.start}-${want.end - 1}/${size}`;
    this.deps.counters.add('uploads');
    try {
      res.writeHead(ranged ? 206 : 200, headers);
      if (req.method === 'HEAD') return void res.end();
      await this.stream(res, fh, path, want);
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  /** Copy `want` from the file to the peer through the upload limiter, stopping if either side goes away. */
  private async stream(res: ServerResponse, fh: FileHandle, path: string, want: Range): Promise<void> {
    const ac = new AbortController();
    const onClose = () => ac.abort();
    res.once('close', onClose);
    this.shutdown.signal.addEventListener('abort', onClose, { once: true });
    try {
      const buf = Buffer.allocUnsafe(Math.min(READ_SIZE, Math.max(1, want.end - want.start)));
      let pos = want.start;
      while (pos < want.end && !ac.signal.aborted) {
        const n = Math.min(buf.length, want.end - pos);
        const { bytesRead } = await fh.read(buf, 0, n, pos);
        if (bytesRead === 0) throw new Error(`short read at ${pos} of ${path}`);
        const wait = this.limiter.take(bytesRead, ac.signal);
        if (wait) await wait;
        const ok = res.write(Buffer.from(buf.subarray(0, bytesRead)));
        this.deps.counters.add('bytesServed', bytesRead);
        pos += bytesRead;
        if (!ok) {
          // A peer that takes nothing for this long is gone (partitioned: no reset ever comes, and
          // the kernel would retry for many minutes); its upload slot goes to the others.
          const stall = setTimeout(() => ac.abort(), UPLOAD_STALL_MS);
          await drained(res, ac.signal);
          clearTimeout(stall);
        }
      }
      if (ac.signal.aborted) res.destroy();
      else res.end();
    } catch (e) {
      if (!ac.signal.aborted) this.log?.warn({ err: (e as Error).message }, 'upload to a peer failed');
      res.destroy();
    } finally {
      res.off('close', onClose);
      this.shutdown.signal.removeEventListener('abort', onClose);
    }
  }
}

export function registerPeerRoutes(router: RouteRegistrar, deps: PeerServerDeps): PeerServer {
  const api = new PeerApi(deps);

  router.add('GET', '/v1/peer/info', ({ req, res }) => {
    if (!api.authorized(req, res)) return;
    sendJson(res, 200, { nodeId: deps.nodeId, protocol: PEER_PROTOCOL });
  });

  router.add('GET', '/v1/peer/blobs/:sha', async ({ req, res, params }) => {
    if (!api.authorized(req, res)) return;
    const sha = api.blobSha(req, res, params.sha!);
    if (!sha) return;
    const { h, body } = await api.status(sha);
    sendJson(res, !h.complete && !body.fetching && h.ranges.length === 0 ? 404 : 200, body);
  });

  router.add('GET', '/v1/peer/blobs/:sha/data', async ({ req, res, params, url }) => {
    if (!api.authorized(req, res)) return;
    const sha = api.blobSha(req, res, params.sha!);
    if (sha) await api.data(req, res, sha, url);
  });

  // A peer was told by an origin to pause: so are we (bounded, and only http(s) origins).
  router.add('POST', '/v1/peer/backoff', async ({ req, res }) => {
    if (!api.authorized(req, res)) return;
    const b = (await readJson(req, 4096)) as { origin?: unknown; waitMs?: unknown };
    const origin = typeof b.origin === 'string' ? canonicalOrigin(b.origin) : undefined;
    const waitMs = typeof b.waitMs === 'number' && Number.isFinite(b.waitMs) && b.waitMs > 0 ? Math.min(b.waitMs, MAX_BACKOFF_MS) : undefined;
    if (origin === undefined || waitMs === undefined) return sendJson(res, 400, { error: 'expected {"origin": "https://host[:port]", "waitMs": > 0}' });
    deps.originBackoff?.note(origin, waitMs, 'peer');
    res.writeHead(204).end();
  });

  return {
    uploadLimiter: api.limiter,
    get activeUploads() {
      return api.slots.inUse;
    },
    close: () => api.shutdown.abort(),
  };
}

/** `https://host[:port]` exactly as URL.origin writes it, or undefined. */
function canonicalOrigin(v: string): string | undefined {
  try {
    const u = new URL(v);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === v ? v : undefined;
  } catch {
    return undefined;
  }
}

/** The asker's pushed view, or undefined when absent or malformed (a hint: peers' bytes are checked anyway). */
function parseViewHeader(h: string | string[] | undefined): { complete: boolean; ranges: Span[]; inflight: Span[] } | undefined {
  if (typeof h !== 'string' || h.length > MAX_VIEW_HEADER) return undefined;
  let v: { complete?: unknown; ranges?: unknown; inflight?: unknown };
  try {
    v = JSON.parse(h) as typeof v;
  } catch {
    return undefined;
  }
  if (!v || typeof v.complete !== 'boolean' || !isRangeList(v.ranges) || !isRangeList(v.inflight ?? [])) return undefined;
  return { complete: v.complete, ranges: v.ranges, inflight: (v.inflight ?? []) as Span[] };
}
