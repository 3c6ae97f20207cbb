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
import { open } from 'node:fs/promises';
import type { Logger } from 'pino';
import { RateLimiter } from '../transfer/limiter.js';
import type { P2PCounters } from './counters.js';
import type { LocalInventory } from './inventory.js';
import { covers, parseByteRange } from './ranges.js';
import type { PeerToken } from './token.js';

export const PEER_PROTOCOL = 1;
export const NODE_HEADER = 'x-swift-fetch-node';
export const FETCHING_HEADER = 'x-swift-fetch-fetching';
const SHA_RE = /^[0-9a-f]{64}$/;
const READ_SIZE = 256 * 1024;
/** Longest long-poll a peer may ask for. */
const MAX_WAIT_MS = 30_000;
/** Longest a request waits in line for an upload slot before 503. */
const QUEUE_MS = 1_000;

/** The slice of the daemon's Router this module needs (structural, so p2p does not import daemon). */
export interface RouteRegistrar {
  add(method: string, pattern: string, handler: (ctx: { req: IncomingMessage; res: ServerResponse; params: Record<string, string>; url: URL }) => void | Promise<void>): unknown;
}

export interface PeerServerDeps {
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

function json(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...extra });
  res.end(text);
}

export function registerPeerRoutes(router: RouteRegistrar, deps: PeerServerDeps): PeerServer {
  const { inventory, counters, token, nodeId } = deps;
  const log = deps.logger?.child({ module: 'p2p-server' });
  const limiter = new RateLimiter(deps.uploadMaxRate ?? 0);
  const maxUploads = Math.max(1, deps.uploadConcurrency ?? 4);
  const maxWaiters = Math.max(0, deps.maxWaiters ?? 256);
  const shutdown = new AbortController();
  // Every held long-poll and every upload waiting on a slow socket listens here; dozens at once are
  // normal in a swarm, not a leak (each removes its listener when it ends).
  setMaxListeners(0, shutdown.signal);
  let active = 0;
  let waiting = 0;

  const authorized = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (token.accepts(req.headers.authorization)) return true;
    counters.add('unauthorized');
    json(res, 401, { error: 'peer token required' }, { 'www-authenticate': 'Bearer realm="swift-fetch-peers"' });
    return false;
  };

  const learn = (req: IncomingMessage, sha: string): void => {
    const peer = req.headers[NODE_HEADER];
    if (typeof peer === 'string' && peer !== nodeId && /^[\w.-]{1,64}$/.test(peer) && req.headers[FETCHING_HEADER] === '1') inventory.noteInterest(sha, peer);
  };

  const statusBody = async (sha: string) => {
    const h = await inventory.holding(sha);
    const fetching = !h.complete && inventory.isFetching(sha);
    return { h, body: { nodeId, sha256: sha, size: h.size ?? null, complete: h.complete, fetching, ranges: h.ranges, inflight: fetching ? inventory.inflight(sha) : [] } };
  };

  router.add('GET', '/v1/peer/info', ({ req, res }) => {
    if (!authorized(req, res)) return;
    json(res, 200, { nodeId, protocol: PEER_PROTOCOL });
  });

  router.add('GET', '/v1/peer/blobs/:sha', async ({ req, res, params }) => {
    if (!authorized(req, res)) return;
    const sha = params.sha!;
    if (!SHA_RE.test(sha)) return json(res, 400, { error: 'expected a lowercase hex SHA-256' });
    learn(req, sha);
    const { h, body } = await statusBody(sha);
    if (!h.complete && !body.fetching && h.ranges.length === 0) return json(res, 404, body);
    json(res, 200, body);
  });

  router.add('GET', '/v1/peer/blobs/:sha/data', async ({ req, res, params, url }) => {
    if (!authorized(req, res)) return;
    const sha = params.sha!;
    if (!SHA_RE.test(sha)) return json(res, 400, { error: 'expected a lowercase hex SHA-256' });
    learn(req, sha);
    const rawRange = req.headers.range;
    const waitMs = Math.min(MAX_WAIT_MS, Math.max(0, Number(url.searchParams.get('wait') ?? 0) || 0));

    let h = await inventory.holding(sha);
    let want = wanted(rawRange, h.size);
    if (want === 'invalid') return json(res, 416, { error: 'unsatisfiable range' }, h.size !== undefined ? { 'content-range': `bytes */${h.size}` } : {});
    if ((!want || !covers(h.ranges, want.start, want.end)) && waitMs > 0 && want && inventory.isFetching(sha) && waiting < maxWaiters) {
      waiting++;
      const ac = new AbortController();
      const onClose = () => ac.abort();
      res.once('close', onClose);
      const onShutdown = () => ac.abort();
      shutdown.signal.addEventListener('abort', onShutdown, { once: true });
      try {
        await inventory.waitFor(sha, want.start, want.end, waitMs, ac.signal);
      } finally {
        waiting--;
        res.off('close', onClose);
        shutdown.signal.removeEventListener('abort', onShutdown);
      }
      if (ac.signal.aborted) {
        if (!res.headersSent) res.destroy();
        return;
      }
      h = await inventory.holding(sha);
    }
    if (h.size === undefined || h.path === undefined) return json(res, 404, (await statusBody(sha)).body);
    want = wanted(rawRange, h.size) ?? { start: 0, end: h.size };
    if (want === 'invalid') return json(res, 416, { error: 'unsatisfiable range' }, { 'content-range': `bytes */${h.size}` });
    if (!covers(h.ranges, want.start, want.end)) return json(res, 404, (await statusBody(sha)).body);
    if (!(await slot(res))) {
      counters.add('uploadsRejected');
      return json(res, 503, { error: 'upload slots busy' }, { 'retry-after': '1' });
    }
    try {
      await serveFile(req, res, sha, h.path, h.size, want.start, want.end, rawRange !== undefined);
    } finally {
      release();
    }
  });

  /**
   * An upload slot, waiting briefly in line when all are taken: a chunk between nodes streams in
   * well under that, and a peer sent away would come back anyway. A full line is refused at once.
   */
  const queue: Array<(ok: boolean) => void> = [];
  function slot(res: ServerResponse): Promise<boolean> {
    if (active < maxUploads) {
      active++;
      return Promise.resolve(true);
    }
    if (queue.length >= maxUploads * 4 || shutdown.signal.aborted) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        res.off('close', gone);
        const i = queue.indexOf(done);
        if (i >= 0) queue.splice(i, 1);
        resolve(ok);
      };
      const gone = () => done(false);
      const timer = setTimeout(() => done(false), QUEUE_MS);
      res.once('close', gone);
      queue.push(done);
    });
  }
  function release(): void {
    const next = queue.shift();
    // The slot passes straight to the next in line.
    if (next) next(true);
    else active--;
  }

  async function serveFile(req: IncomingMessage, res: ServerResponse, sha: string, path: string, size: number, start: number, end: number, ranged: boolean): Promise<void> {
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      // Renamed into the store between the lookup and now: the store copy is the same bytes.
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        const h = await inventory.holding(sha);
        if (h.path && h.path !== path && covers(h.ranges, start, end)) return serveFile(req, res, sha, h.path, size, start, end, ranged);
        return json(res, 404, { error: 'gone' });
      }
      throw e;
    }
    const headers: Record<string, string> = {
      'content-type': 'application/octet-stream',
      'content-length': String(end - start),
      'cache-control': 'no-store',
      [NODE_HEADER]: nodeId,
    };
    if (ranged) headers['content-range'] = `bytes ${start}-${end - 1}/${size}`;
    counters.add('uploads');
    try {
      res.writeHead(ranged ? 206 : 200, headers);
      if (req.method === 'HEAD') return void res.end();
      const ac = new AbortController();
      const onClose = () => ac.abort();
      res.once('close', onClose);
      shutdown.signal.addEventListener('abort', onClose, { once: true });
      try {
        const buf = Buffer.allocUnsafe(Math.min(READ_SIZE, Math.max(1, end - start)));
        let pos = start;
        while (pos < end && !ac.signal.aborted) {
          const n = Math.min(buf.length, end - pos);
          const { bytesRead } = await fh.read(buf, 0, n, pos);
          if (bytesRead === 0) throw new Error(`short read at ${pos} of ${path}`);
          const wait = limiter.take(bytesRead, ac.signal);
          if (wait) await wait;
          const ok = res.write(Buffer.from(buf.subarray(0, bytesRead)));
          counters.add('bytesServed', bytesRead);
          pos += bytesRead;
          if (!ok) await drained(res, ac.signal);
        }
        if (ac.signal.aborted) res.destroy();
        else res.end();
      } catch (e) {
        if (!ac.signal.aborted) log?.warn({ err: (e as Error).message }, 'upload to a peer failed');
        res.destroy();
      } finally {
        res.off('close', onClose);
        shutdown.signal.removeEventListener('abort', onClose);
      }
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  return {
    uploadLimiter: limiter,
    get activeUploads() {
      return active;
    },
    close: () => shutdown.abort(),
  };
}

function wanted(raw: string | undefined, size: number | undefined): { start: number; end: number } | 'invalid' | undefined {
  if (raw === undefined) return undefined;
  if (size !== undefined) return parseByteRange(raw, size);
  // Size unknown yet (nothing durable here): a closed range can still be waited for.
  const m = /^bytes=(\d+)-(\d+)$/.exec(raw.trim());
  if (!m) return 'invalid';
  const start = Number(m[1]);
  const end = Number(m[2]) + 1;
  return end > start ? { start, end } : 'invalid';
}

function drained(res: ServerResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
