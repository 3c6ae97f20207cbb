import { request, type Dispatcher } from 'undici';
import { NetworkError } from '../core/errors.js';
import type { HeaderMap } from '../core/headers.js';
import { HUB_API_BACKOFF, RETRYABLE_STATUS, backoffDelay, parseRateLimitReset, parseRetryAfter, type BackoffPolicy } from '../core/retry.js';
import { sleep } from '../core/sleep.js';

export interface ApiResponse {
  status: number;
  headers: HeaderMap;
  body: string;
}

/** How long the hub asks us to wait: `Retry-After` (seconds or a date), else HF's `RateLimit` reset. */
export function retryAfterMs(h: ApiResponse['headers']): number | undefined {
  return parseRetryAfter(h['retry-after']) ?? parseRateLimitReset(h['ratelimit']);
}

export interface GetOptions {
  dispatcher: Dispatcher;
  headers?: Record<string, string>;
  /** Attempts after the first (default 5). */
  retries?: number;
  signal?: AbortSignal;
  /** Default HUB_API_BACKOFF. */
  backoff?: BackoffPolicy;
}

/**
 * GET a hub API URL, retrying transient statuses and network errors with the shared backoff
 * (core/retry.ts; `Retry-After` honoured). Non-retryable statuses are returned to the caller, who
 * maps them to errors with the hub's own error headers.
 */
export async function apiGet(url: string, opts: GetOptions): Promise<ApiResponse> {
  const retries = opts.retries ?? 5;
  const policy = opts.backoff ?? HUB_API_BACKOFF;
  for (let attempt = 0; ; attempt++) {
    let wish: number | undefined;
    try {
      const res = await request(url, {
        method: 'GET',
        headers: { accept: 'application/json', 'user-agent': 'swift-fetch', ...opts.headers },
        dispatcher: opts.dispatcher,
        signal: opts.signal,
      });
      const body = await res.body.text();
      const out: ApiResponse = { status: res.statusCode, headers: res.headers, body };
      if (!RETRYABLE_STATUS.has(res.statusCode) || attempt >= retries) return out;
      wish = retryAfterMs(res.headers);
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      if (attempt >= retries) {
        throw new NetworkError(`cannot reach ${new URL(url).origin}: ${(e as Error).message}`, 'ESF_NETWORK', { cause: e });
      }
    }
    await sleep(backoffDelay(attempt + 1, policy, wish), opts.signal);
  }
}

export function parseJson<T>(res: ApiResponse, what: string): T {
  try {
    return JSON.parse(res.body) as T;
  } catch {
    throw new NetworkError(`${what}: the hub answered ${res.status} with a body that is not JSON`, 'ESF_BAD_RESPONSE');
  }
}
