/**
 * HTTP client for the peer API. It builds its own headers from the peer token and never sees the
 * hub's request headers, so a hub token cannot travel to a peer. Peers are in-cluster: no proxy.
 */
import { Agent, request, type Dispatcher } from 'undici';
import { BodyTooLargeError, readBodyText } from '../http/body.js';
import { connectOptions, type ServerTrust } from '../http/tls.js';
import { FETCHING_HEADER, MAX_RELAYED, MAX_VIEW_HEADER, NODE_HEADER, VIEW_HEADER } from './server.js';
import { isRangeList, type Range } from './ranges.js';
import type { PeerToken } from './token.js';

/**
 * Largest JSON answers read from a peer. A node's info is a few dozen bytes; a blob status lists
 * ranges (and relays the views of up to MAX_RELAYED peers), a few hundred KiB at most for
 * fragmented multi-GB blobs. A peer that answers /v1/peer/info with 1 GiB of JSON took its victim
 * to 2.2 GB of memory before these (issue 12, item 7).
 */
export const MAX_PEER_INFO_BYTES = 64 * 1024;
export const MAX_PEER_STATUS_BYTES = 1024 * 1024;

/** What one node holds and fetches of a blob. */
export interface PeerView {
  nodeId: string;
  complete: boolean;
  fetching: boolean;
  ranges: Range[];
  inflight: Range[];
}

export interface BlobStatus extends PeerView {
  sha256: string;
  size: number | null;
  /** Nodes that told this one (by asking) that they fetch the blob too. */
  interested: string[];
  /** What this node last heard from the peers it asked (it relays, so others need not ask them all). */
  peers: PeerView[];
}

const NODE_ID_RE = /^[\w.-]{1,64}$/;

export type DataResult =
  | { kind: 'data'; body: AsyncIterable<Uint8Array> & { destroy(err?: Error): void } }
  | { kind: 'missing'; status: BlobStatus | undefined }
  | { kind: 'busy'; retryAfterMs: number };

/** A peer answered something we cannot use (bad status, wrong node, malformed body). */
export class PeerProtocolError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface PeerClientOptions {
  token: PeerToken;
  /** Our node id, sent so that a peer learns who wants what. */
  nodeId: string;
  /** Data connections per peer (default 64; long-polls hold them while they wait). */
  connections?: number;
  /** Timeout for small JSON requests (default 5 s). */
  timeoutMs?: number;
  /** How peers' certificates are checked over https (an untrusted peer never sees the token). */
  trust?: ServerTrust;
  /**
   * A data body that delivers nothing this long is abandoned (default 5 s). Peers are in-cluster
   * and uploads are paced in small pieces: a longer silence is a peer that stalled without
   * closing, and the engine's own stall timeout (30 s) is far too long to wait for it.
   */
  bodyTimeoutMs?: number;
}

export class PeerClient {
  /** Status and info requests: never queued behind long-polls and uploads on the data connections. */
  private readonly control: Agent;
  private readonly agent: Agent;
  private readonly timeoutMs: number;

  constructor(private readonly opts: PeerClientOptions) {
    this.timeoutMs = opts.timeoutMs ?? 5_000;
    const connect = connectOptions(opts.trust);
    this.control = new Agent({ connections: 4, pipelining: 1, keepAliveTimeout: 10_000, connectTimeout: this.timeoutMs, connect });
    this.agent = new Agent({ connections: opts.connections ?? 64, pipelining: 1, keepAliveTimeout: 10_000, connectTimeout: this.timeoutMs, connect });
  }

  private headers(fetching: boolean, extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: this.opts.token.authorization(), [NODE_HEADER]: this.opts.nodeId, ...(fetching ? { [FETCHING_HEADER]: '1' } : {}), ...extra };
  }

  private async get(url: string, headers: Record<string, string>, signal: AbortSignal | undefined, headersTimeout: number, data = false): Promise<Dispatcher.ResponseData> {
    return request(url, { method: 'GET', headers, dispatcher: data ? this.agent : this.control, signal, headersTimeout, bodyTimeout: this.opts.bodyTimeoutMs ?? 5_000 });
  }

  /** Tell a peer that `origin` asked for a pause of `waitMs` (429/503 Retry-After). */
  async backoff(baseUrl: string, origin: string, waitMs: number): Promise<void> {
    const res = await request(`${baseUrl}/v1/peer/backoff`, {
      method: 'POST',
      headers: this.headers(false, { 'content-type': 'application/json' }),
      body: JSON.stringify({ origin, waitMs: Math.round(waitMs) }),
      dispatcher: this.control,
      signal: AbortSignal.timeout(this.timeoutMs),
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
    });
    await res.body.dump().catch(() => undefined);
    if (res.statusCode !== 204) throw new PeerProtocolError(`${baseUrl}: backoff answered ${res.statusCode}`, res.statusCode);
  }

  async info(baseUrl: string, signal?: AbortSignal): Promise<{ nodeId: string; protocol: number }> {
    const res = await this.get(`${baseUrl}/v1/peer/info`, this.headers(false), signal ?? AbortSignal.timeout(this.timeoutMs), this.timeoutMs);
    const body = await readJson(res, MAX_PEER_INFO_BYTES, baseUrl);
    if (res.statusCode !== 200) throw new PeerProtocolError(`${baseUrl}: /v1/peer/info answered ${res.statusCode}`, res.statusCode);
    const b = body as { nodeId?: unknown; protocol?: unknown };
    if (typeof b.nodeId !== 'string' || typeof b.protocol !== 'number') throw new PeerProtocolError(`${baseUrl}: malformed /v1/peer/info`);
    return { nodeId: b.nodeId, protocol: b.protocol };
  }

  /**
   * What a peer holds of a blob; undefined when it holds nothing and is not fetching it. `own` is
   * what this node holds of it, told in passing (the peer relays it to whoever asks it).
   */
  async status(baseUrl: string, sha: string, fetching: boolean, signal?: AbortSignal, own?: OwnView): Promise<BlobStatus | undefined> {
    const extra: Record<string, string> = own ? { [VIEW_HEADER]: viewHeader(own) } : {};
    const res = await this.get(`${baseUrl}/v1/peer/blobs/${sha}`, this.headers(fetching || own?.complete === true, extra), signal ?? AbortSignal.timeout(this.timeoutMs), this.timeoutMs);
    const body = await readJson(res, MAX_PEER_STATUS_BYTES, baseUrl);
    if (res.statusCode === 404) {
      // Holds nothing, but may still know who fetches it (relayed views, interest).
      try {
        return parseStatus(body, sha, baseUrl);
      } catch {
        return undefined;
      }
    }
    if (res.statusCode !== 200) throw new PeerProtocolError(`${baseUrl}: blob status answered ${res.statusCode}`, res.statusCode);
    return parseStatus(body, sha, baseUrl);
  }

  /**
   * Bytes `[start, end)` of a blob. With `waitMs`, a peer still fetching the blob holds the request
   * until it has the range. `expectNode` guards against an address now used by another node.
   */
  async data(baseUrl: string, sha: string, start: number, end: number, o: { waitMs?: number; signal: AbortSignal; fetching: boolean; expectNode?: string }): Promise<DataResult> {
    const wait = o.waitMs && o.waitMs > 0 ? `?wait=${Math.round(o.waitMs)}` : '';
    const res = await this.get(`${baseUrl}/v1/peer/blobs/${sha}/data${wait}`, this.headers(o.fetching, { range: `bytes=${start}-${end - 1}` }), o.signal, (o.waitMs ?? 0) + this.timeoutMs, true);
    if (res.statusCode === 206) {
      const node = res.headers[NODE_HEADER];
      const cr = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(res.headers['content-range'] ?? ''));
      if (!cr || Number(cr[1]) !== start || Number(cr[2]) !== end - 1 || (o.expectNode !== undefined && node !== o.expectNode)) {
        res.body.destroy();
        throw new PeerProtocolError(`${baseUrl}: unexpected answer to bytes ${start}-${end - 1}`);
      }
      return { kind: 'data', body: res.body };
    }
    if (res.statusCode === 404) {
      const body = await readJson(res, MAX_PEER_STATUS_BYTES, baseUrl);
      let status: BlobStatus | undefined;
      try {
        status = parseStatus(body, sha, baseUrl);
      } catch {
        status = undefined;
      }
      return { kind: 'missing', status };
    }
    await res.body.dump().catch(() => undefined);
    if (res.statusCode === 503) {
      const ra = Number(res.headers['retry-after']);
      return { kind: 'busy', retryAfterMs: Number.isFinite(ra) && ra >= 0 ? Math.min(ra * 1000, 10_000) : 1_000 };
    }
    throw new PeerProtocolError(`${baseUrl}: blob data answered ${res.statusCode}`, res.statusCode);
  }

  async close(): Promise<void> {
    await Promise.all([this.agent.destroy().catch(() => undefined), this.control.destroy().catch(() => undefined)]);
  }
}

/** What this node holds of a blob, pushed with a status request. */
export interface OwnView {
  complete: boolean;
  ranges: Range[];
  inflight: Range[];
}

/** The view as a header of at most MAX_VIEW_HEADER bytes: fewer ranges when there are many (a subset is still true). */
function viewHeader(v: OwnView): string {
  let ranges = v.ranges;
  let inflight = v.inflight;
  for (;;) {
    const h = JSON.stringify({ complete: v.complete, ranges, inflight });
    if (h.length <= MAX_VIEW_HEADER) return h;
    ranges = ranges.slice(0, Math.floor(ranges.length / 2));
    inflight = inflight.slice(0, Math.floor(inflight.length / 2));
  }
}

/** A peer's JSON answer, bounded; undefined when it is not JSON (the caller says what was wrong). */
async function readJson(res: Dispatcher.ResponseData, limit: number, baseUrl: string): Promise<unknown> {
  let text: string;
  try {
    text = await readBodyText(res, limit);
  } catch (e) {
    if (e instanceof BodyTooLargeError) throw new PeerProtocolError(`${baseUrl}: ${e.message}`, res.statusCode);
    throw e;
  }
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function parseStatus(body: unknown, sha: string, baseUrl: string): BlobStatus {
  const b = body as Partial<BlobStatus> | undefined;
  if (
    !b ||
    typeof b.nodeId !== 'string' ||
    b.sha256 !== sha ||
    typeof b.complete !== 'boolean' ||
    typeof b.fetching !== 'boolean' ||
    !isRangeList(b.ranges) ||
    !isRangeList(b.inflight ?? [])
  ) {
    throw new PeerProtocolError(`${baseUrl}: malformed blob status`);
  }
  const interested = Array.isArray(b.interested) ? b.interested.filter((x): x is string => typeof x === 'string' && NODE_ID_RE.test(x)).slice(0, MAX_RELAYED) : [];
  const peers = Array.isArray(b.peers) ? b.peers.slice(0, MAX_RELAYED).flatMap((v) => parseView(v)) : [];
  return { nodeId: b.nodeId, sha256: sha, size: typeof b.size === 'number' ? b.size : null, complete: b.complete, fetching: b.fetching, ranges: b.ranges, inflight: b.inflight ?? [], interested, peers };
}

/** One relayed view, or nothing when malformed (a bad entry does not spoil the status). */
function parseView(v: unknown): PeerView[] {
  const x = v as Partial<PeerView> | undefined;
  if (!x || typeof x.nodeId !== 'string' || !NODE_ID_RE.test(x.nodeId) || typeof x.complete !== 'boolean' || typeof x.fetching !== 'boolean' || !isRangeList(x.ranges) || !isRangeList(x.inflight)) return [];
  return [{ nodeId: x.nodeId, complete: x.complete, fetching: x.fetching, ranges: x.ranges, inflight: x.inflight }];
}
