import { request, type Dispatcher } from 'undici';
import { NetworkError, UsageError } from '../core/errors.js';
import type { HeaderMap } from '../core/headers.js';
import { HUB_API_BACKOFF, RETRYABLE_STATUS, backoffDelay, parseRateLimitReset, parseRetryAfter, type BackoffPolicy } from '../core/retry.js';
import { sleep } from '../core/sleep.js';
import { BodyTooLargeError, formatLimit, readBodyText } from '../http/body.js';

/**
 * Largest hub API answer read by default. A Hugging Face tree page of 1,000 entries is a few
 * hundred KiB; ModelScope's file list, one body for the whole repo, asks for more (modelscope.ts).
 */
export const MAX_API_BODY = 16 * 1024 * 1024;

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
  /** Largest body read (default MAX_API_BODY); a larger one is refused, not retried. */
  maxBytes?: number;
  /** Told before each wait for another attempt (a person watching a slow or down hub sees why). */
  onRetry?: (r: ApiRetry) => void;
}

/** One retry of a hub API call: `attempt` of `of` retries, after `delayMs`, because of `reason`. */
export interface ApiRetry {
  attempt: number;
  of: number;
  delayMs: number;
  reason: string;
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
    let reason: string;
    try {
      const res = await request(url, {
        method: 'GET',
        headers: { accept: 'application/json', 'user-agent': 'swift-fetch', ...opts.headers },
        dispatcher: opts.dispatcher,
        signal: opts.signal,
      });
      const body = await readBodyText(res, opts.maxBytes ?? MAX_API_BODY);
      const out: ApiResponse = { status: res.statusCode, headers: res.headers, body };
      if (!RETRYABLE_STATUS.has(res.statusCode) || attempt >= retries) return out;
      wish = retryAfterMs(res.headers);
      reason = `HTTP ${res.statusCode}`;
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      if (e instanceof BodyTooLargeError) {
        throw new UsageError(`${new URL(url).origin} answered ${new URL(url).pathname} with more than ${formatLimit(e.limit)}; refusing to read it`, 'ESF_RESPONSE_TOO_LARGE', { cause: e });
      }
      if (attempt >= retries) {
        throw new NetworkError(`cannot reach ${new URL(url).origin}: ${(e as Error).message}`, 'ESF_NETWORK', { cause: e });
      }
      const code = (e as { code?: unknown }).code;
      reason = typeof code === 'string' ? code : (e as Error).message;
    }
    const delayMs = backoffDelay(attempt + 1, policy, wish);
    opts.onRetry?.({ attempt: attempt + 1, of: retries, delayMs, reason });
    await sleep(delayMs, opts.signal);
  }
}

export function parseJson<T>(res: ApiResponse, what: string): T {
  try {
    return JSON.parse(res.body) as T;
  } catch {
    throw new NetworkError(`${what}: the hub answered ${res.status} with a body that is not JSON`, 'ESF_BAD_RESPONSE');
  }
}
