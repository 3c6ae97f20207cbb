/**
 * The daemon's HTTP API. Model routes take the ref percent-encoded as one path segment
 * (`/v1/models/hf%3A%2F%2FQwen%2FQwen2.5-0.5B`); an unencoded ref also works for the plain
 * routes, since the rest of the path is taken as the ref.
 */
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { UsageError } from '../core/errors.js';
import { formatRef, parseRef } from '../core/ref.js';
import { parseRate } from '../core/units.js';
import { parseModelRequest } from './config.js';
import type { ApiGuard } from './guard.js';
import type { DaemonMetrics } from './metrics.js';
import { TooManyRequested, type ModelStatus, type Reconciler } from './reconciler.js';
import { ROUTES, modelPath, type ModelView } from './routes.js';
import { HttpError, readJson, sendJson, sendText, type Handler, type Router } from './router.js';
import { formatComment, formatEvent } from './sse.js';

export interface ApiContext {
  reconciler: Reconciler;
  metrics: DaemonMetrics;
  limiter: { readonly rate: number; setRate(bps: number): void };
  /** Who may use which route (api.tokenFile, loopback, per-client budget). */
  guard: ApiGuard;
  /** Undefined when ready, else the reason it is not. */
  notReady: () => Promise<string | undefined>;
  env: NodeJS.ProcessEnv;
  logger: Logger;
  /** Called when an on-demand pull asks for a model the store already has (counts as a use). */
  onRequested?: (status: ModelStatus) => void;
  /** Interval between SSE keep-alive comments. */
  keepAliveMs?: number;
  /** Aborts when the daemon stops: event streams end with a final `shutdown` event. */
  signal?: AbortSignal;
}

/** Public view of a model: the contract's fields first, then extras. */
function view(s: ModelStatus): ModelView {
  return {
    ref: s.ref, commit: s.commit, state: s.state, bytesDone: s.bytesDone, bytesTotal: s.bytesTotal, path: s.path, error: s.error,
    exitCode: s.exitCode, errorCode: s.errorCode, declared: s.declared, attempts: s.attempts, nextRetryAt: s.nextRetryAt, waitingFor: s.waitingFor, updatedAt: s.updatedAt,
  };
}

/** The canonical model key (`hub://ORG/NAME@REV`) named by a model route's path. */
function modelKeyFromPath(raw: string, env: NodeJS.ProcessEnv): string {
  // A proxy may have merged the `//` of an unencoded scheme into one slash.
  const fixed = raw.replace(/^([a-z]+):\/(?!\/)/, '$1://');
  return formatRef(parseRef(fixed, env));
}

export function registerApi(router: Router, ctx: ApiContext): void {
  const { reconciler, metrics, limiter, env, guard } = ctx;
  const log = ctx.logger.child({ module: 'api' });
  const read = (h: Handler) => guard.wrap('read', h);
  const mutate = (h: Handler) => guard.wrap('mutate', h);

  router.add('GET', ROUTES.healthz, ({ res }) => sendText(res, 200, 'ok\n'));

  router.add('GET', ROUTES.readyz, async ({ res }) => {
    const why = await ctx.notReady();
    if (why) sendText(res, 503, `not ready: ${why}\n`);
    else sendText(res, 200, 'ready\n');
  });

  router.add('GET', ROUTES.metrics, async ({ res }) => {
    sendText(res, 200, await metrics.text(), metrics.contentType);
  });

  router.add('GET', ROUTES.models, read(({ res }) => sendJson(res, 200, reconciler.list().map(view))));

  router.add('GET', ROUTES.model, read(async (rc) => {
    // Decide on the still-encoded path: `hf%3A%2F%2Forg%2Fevents` is the model org/events.
    let raw = rc.rawParams.ref!;
    const follow = raw.endsWith('/events');
    if (follow) raw = raw.slice(0, -'/events'.length);
    let ref: string;
    try {
      ref = raw.split('/').map(decodeURIComponent).join('/');
    } catch {
      throw new HttpError(400, 'malformed percent-encoding in the path');
    }
    const key = modelKeyFromPath(ref, env);
    const status = reconciler.get(key);
    if (!status) throw new HttpError(404, `model ${key} is not known to this daemon (POST /v1/pulls first)`);
    if (!follow) return sendJson(rc.res, 200, view(status));
    const until = rc.url.searchParams.get('until');
    if (until !== null && until !== 'ready' && until !== 'settled') throw new HttpError(400, 'until: expected "ready" or "settled"');
    followModel(rc.res, { reconciler, key, untilReady: until === 'ready', keepAliveMs: ctx.keepAliveMs ?? 15_000, signal: ctx.signal });
  }));

  router.add('POST', ROUTES.pulls, mutate(async ({ req, res }) => {
    const body = await readJson(req);
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'expected a JSON object {"ref": "..."}');
    const spec = parseModelRequest(body, env); // UsageError → 400 naming the field and the form expected
    let status: ModelStatus;
    try {
      status = reconciler.request(spec);
    } catch (e) {
      if (e instanceof TooManyRequested) throw guard.refuse('too_many_models', 429, e.message, { 'retry-after': '30' });
      throw e;
    }
    log.info({ ref: spec.key, state: status.state }, 'pull requested');
    if (status.state === 'ready') ctx.onRequested?.(status);
    res.setHeader('location', modelPath(spec.key));
    sendJson(res, 202, view(status));
  }));

  router.add('GET', ROUTES.maxRate, read(({ res }) => sendJson(res, 200, { maxRate: limiter.rate })));

  router.add('PUT', ROUTES.maxRate, mutate(async ({ req, res }) => {
    const body = await readJson(req);
    const v = typeof body === 'object' && body !== null ? (body as { maxRate?: unknown }).maxRate : undefined;
    if (typeof v !== 'string' && typeof v !== 'number') throw new HttpError(400, 'maxRate: expected a rate such as "50MB/s", or 0 for unlimited');
    let bps: number;
    try {
      bps = parseRate(v, 'maxRate');
    } catch (e) {
      throw new HttpError(400, (e as UsageError).message);
    }
    limiter.setRate(bps);
    log.info({ maxRate: bps }, 'rate limit changed');
    sendJson(res, 200, { maxRate: limiter.rate });
  }));
}

/**
 * Server-sent events for one model until it settles. Every event's data is the model's JSON
 * view. Event names: `progress` while it moves, then a final `ready` or `failed` after which the
 * stream ends. With `until=ready`, failures are reported as `progress` (with `error` set) and the
 * stream stays open through the daemon's retries until the model is ready. `removed` ends the
 * stream if the model stops being tracked; `shutdown` (the model's last state) when the daemon stops.
 */
function followModel(
  res: ServerResponse,
  { reconciler, key, untilReady, keepAliveMs, signal }: { reconciler: Reconciler; key: string; untilReady: boolean; keepAliveMs: number; signal: AbortSignal | undefined },
): void {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.flushHeaders();
  let lastSent = 0;
  let lastState = '';
  let pending: ModelStatus | undefined;
  let throttle: NodeJS.Timeout | undefined;
  let ended = false;

  const write = (event: string, s: ModelStatus) => {
    res.write(formatEvent(event, JSON.stringify(view(s))));
    lastSent = Date.now();
    lastState = s.state;
  };
  const final = (s: ModelStatus) => s.state === 'ready' || (!untilReady && s.state === 'failed');
  const end = () => {
    if (ended) return;
    ended = true;
    cleanup();
    res.end();
  };
  const send = (s: ModelStatus) => {
    if (ended) return;
    if (final(s)) {
      write(s.state, s);
      return end();
    }
    // State changes go out at once; byte progress at most 4 times a second.
    if (s.state !== lastState || Date.now() - lastSent >= 250) {
      if (throttle) clearTimeout(throttle);
      throttle = undefined;
      pending = undefined;
      return write('progress', s);
    }
    pending = s;
    throttle ??= setTimeout(() => {
      throttle = undefined;
      if (pending && !ended) send(pending);
    }, 250 - (Date.now() - lastSent));
  };
  const onChange = (s: ModelStatus) => {
    if (s.ref === key) send(s);
  };
  const onRemoved = (k: string) => {
    if (k !== key || ended) return;
    res.write(formatEvent('removed', JSON.stringify({ ref: key })));
    end();
  };
  // The daemon is stopping: say so with the model's last state, rather than cutting the stream.
  const onShutdown = () => {
    if (ended) return;
    const s = reconciler.get(key);
    res.write(formatEvent('shutdown', JSON.stringify(s ? view(s) : { ref: key })));
    end();
  };
  const ping = setInterval(() => res.write(formatComment('keep-alive')), keepAliveMs);
  ping.unref();
  const cleanup = () => {
    clearInterval(ping);
    if (throttle) clearTimeout(throttle);
    reconciler.off('change', onChange);
    reconciler.off('removed', onRemoved);
    signal?.removeEventListener('abort', onShutdown);
  };
  reconciler.on('change', onChange);
  reconciler.on('removed', onRemoved);
  signal?.addEventListener('abort', onShutdown, { once: true });
  res.on('close', end);
  res.write('retry: 2000\n\n');
  const now = reconciler.get(key);
  if (signal?.aborted) onShutdown();
  else if (now) send(now);
  else onRemoved(key);
}
