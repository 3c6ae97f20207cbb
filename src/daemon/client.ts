/**
 * A client of the daemon's HTTP API, beside the server it talks to: `init` follows models with it,
 * tests drive daemons with it. Straight to the node daemon, never through a proxy (it is on the
 * node), with a short connect timeout so a daemon that is not there costs seconds, not minutes.
 * It sends the API token (api.tokenFile on the daemon's side) with every request, and waits as
 * told when the daemon says it asks too often (429 with Retry-After).
 */
import { Agent, request, type Dispatcher } from 'undici';
import { AuthError, SwiftFetchError, UsageError } from '../core/errors.js';
import { sleep } from '../core/sleep.js';
import type { BearerToken } from '../http/bearer.js';
import { connectOptions, type ServerTrust } from '../http/tls.js';
import { eventsPath, modelPath, ROUTES, type ModelView, type PullRequestBody } from './routes.js';
import { readEvents } from './sse.js';

/** The daemon did not answer, or answered in a way that says it is not a working swift-fetch daemon. */
export class DaemonUnreachable extends Error {}

/**
 * The events route gave no event stream: `status` 404 (the model is unknown, or the daemon has no
 * such route) or a response that is not `text/event-stream`.
 */
export class EventsUnavailable extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export interface ModelEvent {
  event: string;
  /** The model's view; for `removed` only `ref` is set. */
  model: ModelView;
}

export interface DaemonClientOptions {
  /** Aborts every request; the reason is rethrown as it is. */
  signal?: AbortSignal;
  dispatcher?: Dispatcher;
  /** The daemon's API token (its api.tokenFile). */
  token?: BearerToken | undefined;
  /** For an https:// daemon: the CA its certificate chains to, the name it carries. */
  trust?: ServerTrust | undefined;
}

/** Answers of 429 in a row after which the daemon counts as unavailable. */
const MAX_BUSY = 5;
/** The longest Retry-After honoured (a longer one is a daemon we should not wait for). */
const MAX_RETRY_AFTER_MS = 60_000;

export class DaemonClient {
  readonly base: string;
  private readonly dispatcher: Dispatcher;
  private readonly ownDispatcher: boolean;
  private readonly signal: AbortSignal | undefined;
  private readonly token: BearerToken | undefined;

  constructor(base: string, opts: DaemonClientOptions = {}) {
    this.base = base.replace(/\/+$/, '');
    this.signal = opts.signal;
    this.token = opts.token;
    this.ownDispatcher = !opts.dispatcher;
    this.dispatcher = opts.dispatcher ?? new Agent({ connect: { timeout: 5_000, ...connectOptions(opts.trust) }, headersTimeout: 10_000, bodyTimeout: 60_000 });
  }

  async close(): Promise<void> {
    if (this.ownDispatcher) await this.dispatcher.close().catch(() => undefined);
  }

  /** Ask for a model (`POST /v1/pulls`). A ref the daemon rejects is bad usage (exit 2). */
  async pull(body: PullRequestBody): Promise<ModelView> {
    const r = await this.call('POST', ROUTES.pulls, body);
    if (r.status === 202 || r.status === 200) return r.json as ModelView;
    const msg = errorText(r);
    if (r.status === 400) throw new UsageError(`the daemon refused ${body.ref}: ${msg}`);
    // 404/405 (not a swift-fetch daemon), 5xx (shutting down, broken): treat as not there.
    throw new DaemonUnreachable(`POST ${ROUTES.pulls} answered ${r.status}: ${msg}`);
  }

  /** One model; undefined when the daemon does not know it (restarted, or forgot an on-demand pull). */
  async model(key: string): Promise<ModelView | undefined> {
    const r = await this.call('GET', modelPath(key));
    if (r.status === 200) return r.json as ModelView;
    if (r.status === 404) return undefined;
    throw new DaemonUnreachable(`GET ${ROUTES.models}/… answered ${r.status}: ${errorText(r)}`);
  }

  async models(): Promise<ModelView[]> {
    const r = await this.call('GET', ROUTES.models);
    if (r.status === 200) return r.json as ModelView[];
    throw new DaemonUnreachable(`GET ${ROUTES.models} answered ${r.status}: ${errorText(r)}`);
  }

  /** Undefined when the daemon is ready, else its reason (from `/readyz`). */
  async notReady(): Promise<string | undefined> {
    const r = await this.call('GET', ROUTES.readyz);
    return r.status === 200 ? undefined : r.text.trim() || `HTTP ${r.status}`;
  }

  async maxRate(): Promise<number> {
    const r = await this.call('GET', ROUTES.maxRate);
    if (r.status !== 200) throw new DaemonUnreachable(`GET ${ROUTES.maxRate} answered ${r.status}`);
    return (r.json as { maxRate: number }).maxRate;
  }

  /** Change the rate limit at run time; returns the limit the daemon now applies. */
  async setMaxRate(rate: string | number): Promise<number> {
    const r = await this.call('PUT', ROUTES.maxRate, { maxRate: rate });
    if (r.status === 400) throw new UsageError(`the daemon refused maxRate ${JSON.stringify(rate)}: ${errorText(r)}`);
    if (r.status !== 200) throw new DaemonUnreachable(`PUT ${ROUTES.maxRate} answered ${r.status}`);
    return (r.json as { maxRate: number }).maxRate;
  }

  /**
   * One model's server-sent events, each as it arrives; returns when the daemon ends the stream.
   * Throws EventsUnavailable when the route does not stream, DaemonUnreachable when the connection
   * fails or breaks.
   */
  async *events(key: string, until?: 'ready' | 'settled'): AsyncGenerator<ModelEvent> {
    let res;
    try {
      res = await request(`${this.base}${eventsPath(key, until)}`, {
        method: 'GET',
        dispatcher: this.dispatcher,
        signal: this.signal,
        headers: { accept: 'text/event-stream', ...this.auth() },
      });
    } catch (e) {
      throw this.failure(e);
    }
    const type = String(res.headers['content-type'] ?? '');
    if (res.statusCode === 401 || res.statusCode === 403) {
      const text = await res.body.text().catch(() => '');
      throw this.refused(res.statusCode, errorText({ status: res.statusCode, json: parseJson(text) }));
    }
    if (res.statusCode !== 200 || !type.startsWith('text/event-stream')) {
      await res.body.dump().catch(() => undefined);
      throw new EventsUnavailable(res.statusCode, `the events route answered ${res.statusCode} ${type}`.trim());
    }
    try {
      for await (const ev of readEvents(res.body)) {
        let model: ModelView;
        try {
          model = JSON.parse(ev.data) as ModelView;
        } catch {
          continue; // not ours to interpret; the next event carries the full state again
        }
        yield { event: ev.event, model };
      }
    } catch (e) {
      throw this.failure(e);
    } finally {
      // A consumer that stops early must not leave the connection open.
      if (!res.body.destroyed) res.body.destroy();
    }
  }

  /**
   * One request, answered: a 429 is waited out (Retry-After) and asked again, up to MAX_BUSY
   * times; a 401 or 403 is an AuthError (exit 4), since no retry can fix a token.
   */
  private async call(method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<{ status: number; text: string; json: unknown }> {
    for (let busy = 1; ; busy++) {
      const r = await this.once(method, path, body);
      if (r.status === 429 && busy < MAX_BUSY) {
        await sleep(r.retryAfterMs, this.signal);
        continue;
      }
      if (r.status === 401 || r.status === 403) throw this.refused(r.status, errorText(r));
      return r;
    }
  }

  private async once(method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<{ status: number; text: string; json: unknown; retryAfterMs: number }> {
    let res;
    try {
      res = await request(`${this.base}${path}`, {
        method,
        dispatcher: this.dispatcher,
        signal: this.signal,
        headers: { ...this.auth(), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (e) {
      throw this.failure(e);
    }
    const text = await res.body.text().catch(() => '');
    const seconds = Number(res.headers['retry-after']);
    const retryAfterMs = Number.isFinite(seconds) && seconds >= 0 ? Math.min(seconds * 1000, MAX_RETRY_AFTER_MS) : 1_000;
    return { status: res.statusCode, text, json: parseJson(text), retryAfterMs };
  }

  private auth(): Record<string, string> {
    return this.token ? { authorization: this.token.authorization() } : {};
  }

  /** The daemon refused us (401: token missing or wrong; 403: it takes only loopback clients). */
  private refused(status: number, msg: string): AuthError {
    const fix =
      status === 403
        ? 'it has no api.tokenFile and takes such requests only from its own host (loopback): give it one, and pass the token with --daemon-token-file'
        : this.token
          ? 'check that --daemon-token-file (SWIFT_FETCH_API_TOKEN_FILE) holds the token of the daemon\'s api.tokenFile'
          : 'pass its API token with --daemon-token-file or SWIFT_FETCH_API_TOKEN_FILE';
    return new AuthError(`the daemon at ${this.base} refused the request (${status}: ${msg}); ${fix}`, 'ESF_DAEMON_AUTH');
  }

  /** Our own abort passes through untouched (a timeout, Ctrl-C); anything else means no daemon. */
  private failure(e: unknown): unknown {
    if (this.signal?.aborted) return this.signal.reason;
    const why = describeNetError(e);
    // A certificate we do not trust is not a daemon that is away: it may not be ours at all.
    if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS_CERT_ALTNAME/.test(why)) {
      return new AuthError(`the daemon at ${this.base} presented a certificate this client does not trust (${why}): pass its CA with --daemon-ca-file and, for an IP address, the name its certificate carries with --daemon-server-name`, 'ESF_DAEMON_TLS');
    }
    return new DaemonUnreachable(why);
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function errorText(r: { status: number; json: unknown }): string {
  return (r.json as { error?: string } | undefined)?.error ?? `HTTP ${r.status}`;
}

function describeNetError(e: unknown): string {
  const err = e as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  return err?.cause?.code ?? err?.code ?? err?.cause?.message ?? err?.message ?? String(e);
}

/**
 * The error a daemon-reported failure stands for: the daemon sends the failure's exit code (and
 * stable error code) with every failed model, and that code is the answer, whatever the name of
 * the error code. Undefined when the daemon sent no usable exit code (not a swift-fetch daemon of
 * this protocol): the caller then finds out by itself.
 */
export function daemonFailure(m: ModelView, label: string): SwiftFetchError | undefined {
  const code = m.exitCode;
  if (typeof code !== 'number' || !Number.isInteger(code) || code < 1 || code > 125) return undefined;
  return new SwiftFetchError(m.errorCode ?? 'ESF_DAEMON', code, `${label}: the daemon failed to pull it: ${m.error ?? 'unknown error'}`);
}
