/**
 * What is worth retrying and how long to wait: the one retry policy of the code base. Hub API
 * calls (sources), chunk requests (transfer) and the daemon's reconciler all wait
 * `backoffDelay(failures, policy)`; they differ only in the numbers of their policy.
 *
 * Modelled on undici's RetryHandler: only listed statuses and network errors, exponential backoff
 * with "equal jitter" (half the step fixed, half random) and a cap, and `Retry-After` (seconds or
 * an HTTP date) winning over the backoff.
 */

export const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);

const RETRYABLE_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ENOTFOUND', 'ENETDOWN', 'ENETUNREACH', 'EHOSTDOWN', 'EHOSTUNREACH',
  'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN',
  'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'UND_ERR_REQ_RETRY',
]);

/** A failure that another attempt may fix. `retryAfterMs` is the server's wish, if it said one. */
export class RetryableError extends Error {
  /** The URL origin that asked for the pause (429/503 with Retry-After), shared with the cluster. */
  readonly origin: string | undefined;
  constructor(
    readonly reason: string,
    readonly retryAfterMs?: number,
    options?: { cause?: unknown; origin?: string },
  ) {
    super(reason, options);
    this.origin = options?.origin;
  }
}

export function isRetryableNetworkError(e: unknown): boolean {
  if (e instanceof RetryableError) return true;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && RETRYABLE_CODES.has(code)) return true;
  const cause = (e as { cause?: unknown } | null)?.cause;
  return cause !== undefined && cause !== e && isRetryableNetworkError(cause);
}

/** `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT` → milliseconds from `now`. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  const s = v.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  const t = Date.parse(s);
  if (Number.isNaN(t)) return undefined;
  return Math.max(0, t - now);
}

/** HF's `RateLimit: "api";r=0;t=N` says when the window resets (seconds). */
export function parseRateLimitReset(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  const m = v ? /;\s*t=(\d+)/.exec(v) : null;
  return m ? Number(m[1]) * 1000 : undefined;
}

/** How the wait grows between attempts. */
export interface BackoffPolicy {
  /** The first wait's ceiling; each further failure doubles it. */
  baseMs: number;
  /** The ceiling never grows past this. */
  maxMs: number;
  /**
   * Upper bound for a server-requested wait, so a hostile header cannot park us for a day.
   * Without one, a server's wish is bounded by `maxMs`.
   */
  maxRetryAfterMs?: number;
}

/** Chunk requests of the transfer engine. */
export const TRANSFER_BACKOFF = { baseMs: 500, maxMs: 30_000, maxRetryAfterMs: 300_000 } satisfies BackoffPolicy;

/** Hub API calls (listings, revisions): small, and a user is waiting, so they start at a quarter second. */
export const HUB_API_BACKOFF = { baseMs: 250, maxMs: 30_000, maxRetryAfterMs: 300_000 } satisfies BackoffPolicy;

/**
 * Delay before attempt `failures + 1` (`failures` >= 1): exponential with equal jitter, capped;
 * a server's `Retry-After` (bounded) replaces it.
 */
export function backoffDelay(failures: number, policy: BackoffPolicy, retryAfterMs?: number, random = Math.random): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, policy.maxRetryAfterMs ?? policy.maxMs);
  // Clamped so that a very long failure streak cannot overflow to Infinity or go below the base.
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(30, Math.max(0, failures - 1)));
  // Half fixed, half jitter: never zero, still decorrelated between connections and nodes.
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
