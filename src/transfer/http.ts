import type { OriginBackoff } from '../core/origin-backoff.js';
import { Agent, EnvHttpProxyAgent, type Dispatcher } from 'undici';
import type { IncomingHttpHeaders } from 'undici/types/header.js';
import { AuthError, NetworkError, NotFoundError } from '../core/errors.js';
import { headerValue, type HeaderMap } from '../core/headers.js';
import type { Origin } from '../core/transfer.js';
import { RETRYABLE_STATUS, RetryableError, parseRateLimitReset, parseRetryAfter } from '../core/retry.js';

const USER_AGENT = 'swift-fetch/0.1';
const MAX_HOPS = 6;
/** How often one blob may ask the hub to re-sign an expired CDN URL within one attempt chain. */
const MAX_RESIGNS = 4;

/**
 * One dispatcher per engine call: keep-alive connections reused across chunks and files,
 * `connections` per origin, proxies from the given environment.
 */
export function createDispatcher(connections: number, env: NodeJS.ProcessEnv): Dispatcher {
  return proxyAwareDispatcher(env, {
    connections,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 600_000,
    // Stalls are detected by the engine, which knows when it is pausing on purpose (rate limit,
    // disk backpressure); undici's own timers would misfire then.
    headersTimeout: 0,
    bodyTimeout: 0,
  });
}

/**
 * An undici dispatcher that honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the given
 * environment (not silently from process.env); an empty value means "none".
 */
export function proxyAwareDispatcher(env: NodeJS.ProcessEnv, agentOpts: Agent.Options): Dispatcher {
  const httpProxy = env.HTTP_PROXY ?? env.http_proxy ?? '';
  const httpsProxy = env.HTTPS_PROXY ?? env.https_proxy ?? '';
  if (!httpProxy && !httpsProxy) return new Agent(agentOpts);
  return new EnvHttpProxyAgent({
    ...agentOpts,
    httpProxy,
    // Like curl and undici: an https target uses HTTP_PROXY when HTTPS_PROXY is unset.
    httpsProxy: httpsProxy || httpProxy,
    noProxy: env.NO_PROXY ?? env.no_proxy ?? '',
  });
}

/** Per-blob origin knowledge shared by all of the blob's connections. */
export class OriginSession {
  /** Scheme, host and port of the hub: the only origin that gets `hubHeaders` (never over a downgrade to http). */
  readonly hubOrigin: string;
  /** The signed CDN URL (or the final same-host URL) the hub last pointed at. */
  target: string | undefined;
  /** `etag|size` as the hub (or the final server) described the content. */
  validator: string | undefined;
  constructor(readonly origin: Origin) {
    this.hubOrigin = new URL(origin.url).origin;
  }
}

export interface RangeResponse {
  status: number;
  headers: HeaderMap;
  body: RawBody;
  url: string;
  /** The validator seen on this request chain, when the hub was asked. */
  validator: string | undefined;
}

/** Body bytes held before the socket is paused; the engine's write batch is what really buffers. */
const BODY_HIGH_WATER = 128 * 1024;

/**
 * A response body straight from undici's dispatch handler: socket pieces are queued as they are
 * parsed and handed out by a hand-written async iterator. This skips undici's Readable and Node's
 * stream machinery (per piece: buffer list, read(), nextTick, iterator promise), which cost 0.3-0.9 s
 * of CPU per 2 GiB on the main thread (docs/benchmarks.md). Backpressure is the same: past
 * BODY_HIGH_WATER the parser pauses and the socket is not read until the consumer catches up.
 */
export class RawBody implements AsyncIterable<Uint8Array>, AsyncIterator<Uint8Array> {
  private readonly queue: Uint8Array[] = [];
  private head = 0;
  private queued = 0;
  private ended = false;
  private error: unknown;
  private discard = false;
  private waiter: { resolve: (r: IteratorResult<Uint8Array>) => void; reject: (e: unknown) => void } | undefined;
  private endWaiters: Array<() => void> = [];
  /** @internal */ controller: Dispatcher.DispatchController | undefined;

  /** @internal */ push(chunk: Uint8Array): void {
    if (this.discard) return;
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      w.resolve({ value: chunk, done: false });
      return;
    }
    this.queue.push(chunk);
    this.queued += chunk.length;
    if (this.queued >= BODY_HIGH_WATER) this.controller?.pause();
  }

  /** @internal */ end(error?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    if (error !== undefined) this.error = error;
    const w = this.waiter;
    this.waiter = undefined;
    if (w) {
      if (this.error !== undefined) w.reject(this.error);
      else w.resolve({ value: undefined, done: true });
    }
    for (const f of this.endWaiters.splice(0)) f();
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    if (this.head < this.queue.length) {
      const value = this.queue[this.head]!;
      this.queue[this.head++] = undefined as unknown as Uint8Array;
      this.queued -= value.length;
      if (this.head === this.queue.length) {
        this.queue.length = 0;
        this.head = 0;
      }
      if (this.controller?.paused && this.queued < BODY_HIGH_WATER / 2 && !this.ended) this.controller.resume();
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) return this.error !== undefined ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
    if (this.controller?.paused) this.controller.resume();
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /** Leaving a for-await early (break, throw) stops the transfer, as destroying a stream would. */
  return(): Promise<IteratorResult<Uint8Array>> {
    this.destroy();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this;
  }

  /** Drop the rest: a finished body costs nothing, an unfinished one closes its connection. */
  destroy(): void {
    this.queue.length = 0;
    this.head = 0;
    this.queued = 0;
    if (this.ended) return;
    this.discard = true;
    this.controller?.abort(new Error('response body discarded'));
    this.end(new Error('response body discarded'));
  }

  /** Read and discard the rest so the connection can be reused (redirect bodies are tiny). */
  dump(): Promise<void> {
    this.discard = true;
    this.queue.length = 0;
    this.head = 0;
    this.queued = 0;
    if (this.controller?.paused) this.controller.resume();
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => this.endWaiters.push(resolve));
  }
}

interface RawResponse {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: RawBody;
}

/** One GET through undici's dispatch API; resolves at the response headers, like `request()`. */
function dispatchGet(dispatcher: Dispatcher, u: URL, headers: Record<string, string>, signal: AbortSignal): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const body = new RawBody();
    let started = false;
    let aborted: unknown;
    const onAbort = () => {
      aborted = signal.reason;
      if (body.controller) body.controller.abort(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const finish = (err?: unknown) => {
      signal.removeEventListener('abort', onAbort);
      if (!started) reject(err ?? new Error('response ended before its headers'));
      body.end(err);
    };
    try {
      dispatcher.dispatch(
        { origin: u.origin, path: `${u.pathname}${u.search}`, method: 'GET', headers },
        {
          onRequestStart(controller) {
            body.controller = controller;
            if (aborted !== undefined) controller.abort(aborted as Error);
          },
          onResponseStart(controller, statusCode, resHeaders) {
            body.controller = controller;
            started = true;
            resolve({ statusCode, headers: resHeaders, body });
          },
          onResponseData(_controller, chunk) {
            body.push(chunk);
          },
          onResponseEnd() {
            finish();
          },
          onResponseError(_controller, err) {
            finish(aborted !== undefined && signal.aborted ? signal.reason : err);
          },
        },
      );
    } catch (e) {
      signal.removeEventListener('abort', onAbort);
      reject(e);
    }
  });
}

export function normalizeEtag(v: string | undefined): string | undefined {
  if (!v) return undefined;
  return v.replace(/^W\//, '').replace(/^"|"$/g, '');
}

/**
 * The headers a Range GET to `u` may carry: the hub's own headers (its token) only when `u` is the
 * hub's origin (same scheme, host and port), never for a CDN or any other host. The main thread
 * and the receive workers (which get these, and follow no redirect) share this one rule.
 */
export function rangeHeaders(session: OriginSession, u: URL, start: number, end: number | undefined): Record<string, string> {
  const headers: Record<string, string> = {
    'user-agent': USER_AGENT,
    'accept-encoding': 'identity',
    range: end === undefined ? `bytes=${start}-` : `bytes=${start}-${end - 1}`,
  };
  if (u.origin === session.hubOrigin) Object.assign(headers, session.origin.hubHeaders);
  return headers;
}

/**
 * A 403 or 410 from a host other than the hub's: the signed CDN URL expired, and the hub signs a
 * fresh one. The main thread's requests and the receive workers' refusals share this rule.
 */
export function isExpiredSignedUrl(status: number, toHub: boolean): boolean {
  return !toHub && (status === 403 || status === 410);
}

/** Whether the environment names a proxy (the receive workers connect directly, so they stay off). */
export function usesProxy(env: NodeJS.ProcessEnv): boolean {
  return !!((env.HTTP_PROXY ?? env.http_proxy ?? '') || (env.HTTPS_PROXY ?? env.https_proxy ?? ''));
}

/**
 * GET `[start, end)` of the blob (or all of it from `start` when `end` is undefined). Follows
 * redirects by hand so the hub's headers only ever go to the hub's host; reuses the CDN URL the
 * hub handed out, and goes back to the hub when the CDN says it expired (403/410).
 * Returns a 200 or 206 with its body unread; throws RetryableError or a SwiftFetchError otherwise.
 */
export async function openRange(
  dispatcher: Dispatcher,
  session: OriginSession,
  label: string,
  start: number,
  end: number | undefined,
  signal: AbortSignal,
  backoff?: OriginBackoff,
): Promise<RangeResponse> {
  let url = session.target ?? session.origin.url;
  let resigns = 0;
  let validator: string | undefined;
  for (let hop = 0; hop < MAX_HOPS + MAX_RESIGNS; hop++) {
    const u = new URL(url);
    // Every hop: the hub may send us to a CDN host that asked (us or a peer) for a pause.
    await backoff?.wait([u.origin], signal);
    const toHub = u.origin === session.hubOrigin;
    const headers = rangeHeaders(session, u, start, end);
    if (toHub && session.origin.sign) Object.assign(headers, await session.origin.sign({ url, headers }));
    const res = await dispatchGet(dispatcher, u, headers, signal);
    const h = res.headers;
    if (toHub) {
      const etag = normalizeEtag(headerValue(h, 'x-linked-etag') ?? headerValue(h, 'etag'));
      const size = headerValue(h, 'x-linked-size') ?? totalFromContentRange(headerValue(h, 'content-range')) ?? (res.statusCode === 200 ? headerValue(h, 'content-length') : undefined);
      if (etag || size) validator = `${etag ?? ''}|${size ?? ''}`;
    }
    if (res.statusCode >= 300 && res.statusCode < 400 && headerValue(h, 'location')) {
      await res.body.dump().catch(() => undefined);
      url = new URL(headerValue(h, 'location')!, u).href;
      continue;
    }
    if (res.statusCode === 200 || res.statusCode === 206) {
      if (!validator && !toHub && session.validator === undefined) {
        const etag = normalizeEtag(headerValue(h, 'etag'));
        const size = totalFromContentRange(headerValue(h, 'content-range')) ?? (res.statusCode === 200 ? headerValue(h, 'content-length') : undefined);
        if (etag || size) validator = `${etag ?? ''}|${size ?? ''}`;
      }
      if (url !== session.origin.url) session.target = url;
      if (validator) session.validator = validator;
      return { status: res.statusCode, headers: h, body: res.body, url, validator };
    }
    const text = await readSmall(res.body);
    if (isExpiredSignedUrl(res.statusCode, toHub)) {
      // A signed CDN URL expired: the hub signs a fresh one (unless another connection of this
      // blob already got one).
      if (++resigns > MAX_RESIGNS) throw new NetworkError(`${label}: the CDN keeps refusing freshly signed URLs (HTTP ${res.statusCode} from ${u.host})`);
      if (session.target !== undefined && session.target !== url) {
        url = session.target;
        continue;
      }
      session.target = undefined;
      url = session.origin.url;
      continue;
    }
    throw statusError(res.statusCode, h, label, u, toHub, text, session.origin.authHint);
  }
  throw new NetworkError(`${label}: too many redirects from ${new URL(session.origin.url).host}`);
}

function totalFromContentRange(v: string | undefined): string | undefined {
  const m = v ? /\/(\d+)\s*$/.exec(v) : null;
  return m ? m[1] : undefined;
}

/**
 * `bytes first-last/complete` (or `/*`) as `[start, end)` and the total; undefined for anything
 * else, including what RFC 9110 calls invalid (last before first, last at or past the total) and
 * numbers past 2^53 that would silently round.
 */
export function parseContentRange(v: string | undefined): { start: number; end: number; total: number | undefined } | undefined {
  const m = v ? /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(v) : null;
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]) + 1;
  const total = m[3] === '*' ? undefined : Number(m[3]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end <= start) return undefined;
  if (total !== undefined && (!Number.isSafeInteger(total) || end > total)) return undefined;
  return { start, end, total };
}

async function readSmall(body: RawBody): Promise<string> {
  try {
    let out = '';
    for await (const piece of body) {
      if (out.length < 2048) out += Buffer.from(piece as Uint8Array).toString('utf8');
    }
    return out.slice(0, 2048);
  } catch {
    return '';
  }
}

const NOT_FOUND_CODES = new Set(['RepoNotFound', 'RevisionNotFound', 'EntryNotFound']);

export function statusError(
  status: number,
  h: HeaderMap,
  label: string,
  u: URL,
  toHub: boolean,
  body: string,
  authHint?: string,
): Error {
  const code = headerValue(h, 'x-error-code');
  const msg = headerValue(h, 'x-error-message') ?? body.trim().slice(0, 200);
  const detail = `HTTP ${status}${code ? ` ${code}` : ''}${msg ? `: ${msg}` : ''}`;
  if (RETRYABLE_STATUS.has(status)) {
    const wait = parseRetryAfter(h['retry-after']) ?? (status === 429 ? parseRateLimitReset(h['ratelimit']) : undefined);
    // A pause the server asked for (429, or 503 with Retry-After) concerns everyone asking it.
    return new RetryableError(`${label}: ${detail} from ${u.host}`, wait, wait !== undefined && (status === 429 || status === 503) ? { origin: u.origin } : undefined);
  }
  if (status === 404 || status === 410 || (code !== undefined && NOT_FOUND_CODES.has(code))) {
    return new NotFoundError(`${label} not found at ${u.host} (${detail})`);
  }
  if (toHub && (status === 401 || status === 403)) {
    const gated = code === 'GatedRepo' ? 'the repository is gated: accept its terms on the hub, then ' : '';
    return new AuthError(
      `access to ${label} was refused by ${u.host} (${detail}); ${gated}${authHint ?? 'set HF_TOKEN (Hugging Face) or MODELSCOPE_API_TOKEN (ModelScope) to a token with access'}`,
      code === 'GatedRepo' ? 'ESF_GATED' : 'ESF_AUTH',
    );
  }
  if (status >= 500) return new RetryableError(`${label}: ${detail} from ${u.host}`);
  return new NetworkError(`${label}: unexpected ${detail} from ${u.host}`);
}
