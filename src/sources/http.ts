import { Agent, EnvHttpProxyAgent, request, type Dispatcher } from 'undici';
import { NetworkError } from '../core/errors.js';
import { sleep } from '../core/sleep.js';

/** One dispatcher per environment: honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY when set. */
export function dispatcherFor(env: NodeJS.ProcessEnv): Dispatcher {
  const proxied = ['HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy'].some((k) => env[k]);
  if (!proxied) return new Agent({ connections: 8 });
  return new EnvHttpProxyAgent({
    httpProxy: env.HTTP_PROXY ?? env.http_proxy,
    httpsProxy: env.HTTPS_PROXY ?? env.https_proxy ?? env.HTTP_PROXY ?? env.http_proxy,
    noProxy: env.NO_PROXY ?? env.no_proxy,
  });
}

export interface ApiResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);

export function header(h: ApiResponse['headers'], name: string): string | undefined {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** Seconds from `Retry-After` (delta or HTTP date) or HF's `RateLimit: "api";r=0;t=N`. */
export function retryAfterMs(h: ApiResponse['headers']): number | undefined {
  const ra = header(h, 'retry-after');
  if (ra) {
    if (/^\d+(\.\d+)?$/.test(ra.trim())) return Number(ra) * 1000;
    const t = Date.parse(ra);
    if (!Number.isNaN(t)) return Math.max(0, t - Date.now());
  }
  const rl = header(h, 'ratelimit');
  const m = rl ? /t=(\d+)/.exec(rl) : null;
  return m ? Number(m[1]) * 1000 : undefined;
}

export interface GetOptions {
  dispatcher: Dispatcher;
  headers?: Record<string, string>;
  retries?: number;
  signal?: AbortSignal;
  /** Upper bound for one backoff sleep. */
  maxDelayMs?: number;
}

/**
 * GET a hub API URL with retries for transient statuses and network errors (exponential backoff
 * with full jitter, Retry-After honoured). Non-retryable statuses are returned to the caller, who
 * maps them to errors with the hub's own error headers.
 */
export async function apiGet(url: string, opts: GetOptions): Promise<ApiResponse> {
  const retries = opts.retries ?? 5;
  let lastErr: unknown;
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await request(url, {
        method: 'GET',
        headers: { accept: 'application/json', 'user-agent': 'swift-fetch', ...opts.headers },
        dispatcher: opts.dispatcher,
        signal: opts.signal,
        maxRedirections: 0,
      } as Parameters<typeof request>[1]);
      const body = await res.body.text();
      const out: ApiResponse = { status: res.statusCode, headers: res.headers, body };
      if (!RETRY_STATUS.has(res.statusCode) || attempt >= retries) return out;
      await sleep(backoff(attempt, opts.maxDelayMs, retryAfterMs(res.headers)), opts.signal);
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      lastErr = e;
      if (attempt >= retries) {
        throw new NetworkError(`cannot reach ${new URL(url).origin}: ${(e as Error).message}`, 'ESF_NETWORK', { cause: lastErr });
      }
      await sleep(backoff(attempt, opts.maxDelayMs), opts.signal);
    }
  }
}

export function backoff(attempt: number, maxDelayMs = 30_000, retryAfter?: number): number {
  if (retryAfter !== undefined) return Math.min(retryAfter, 5 * 60_000);
  const cap = Math.min(maxDelayMs, 250 * 2 ** attempt);
  return Math.round(cap / 2 + Math.random() * (cap / 2));
}


export function parseJson<T>(res: ApiResponse, what: string): T {
  try {
    return JSON.parse(res.body) as T;
  } catch {
    throw new NetworkError(`${what}: the hub answered ${res.status} with a body that is not JSON`, 'ESF_BAD_RESPONSE');
  }
}
