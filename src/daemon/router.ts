/**
 * A small router over node:http: exact segments, `:param` segments and a trailing `*rest`.
 * Matching happens on the raw (still percent-encoded) path so that an encoded `/` inside a
 * parameter (a model ref like `hf%3A%2F%2FOrg%2FName`) stays inside that parameter.
 * Peer routes (`/v1/peer/...`) are added by the p2p module through the same `add()`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { UsageError } from '../core/errors.js';
import { HttpError, sendJson } from '../http/respond.js';

// The response helpers live below every API (the peer routes use them too); routes import them from here as well.
export { HttpError, readJson, sendJson, sendText } from '../http/respond.js';

export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  /** Decoded parameters. */
  params: Record<string, string>;
  /** The same parameters still percent-encoded (an encoded `/` stays `%2F`). */
  rawParams: Record<string, string>;
  url: URL;
}

export type Handler = (ctx: RouteContext) => void | Promise<void>;

interface Route {
  method: string;
  parts: string[];
  handler: Handler;
}

export class Router {
  private readonly routes: Route[] = [];

  add(method: string, pattern: string, handler: Handler): this {
    this.routes.push({ method: method.toUpperCase(), parts: pattern.split('/').filter(Boolean), handler });
    return this;
  }

  private match(route: Route, segs: string[]): { params: Record<string, string>; rawParams: Record<string, string> } | undefined {
    const params: Record<string, string> = {};
    const rawParams: Record<string, string> = {};
    for (let i = 0; i < route.parts.length; i++) {
      const p = route.parts[i]!;
      if (p.startsWith('*')) {
        if (i >= segs.length) return undefined;
        rawParams[p.slice(1)] = segs.slice(i).join('/');
        params[p.slice(1)] = segs.slice(i).map(decode).join('/');
        return { params, rawParams };
      }
      const s = segs[i];
      if (s === undefined) return undefined;
      if (p.startsWith(':')) {
        rawParams[p.slice(1)] = s;
        params[p.slice(1)] = decode(s);
      } else if (p !== s) return undefined;
    }
    return route.parts.length === segs.length ? { params, rawParams } : undefined;
  }

  /** Dispatch one request; unknown paths get 404, known paths with another method 405. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const segs = url.pathname.split('/').filter(Boolean);
    const method = (req.method ?? 'GET').toUpperCase();
    const allowed = new Set<string>();
    for (const r of this.routes) {
      let m: ReturnType<Router['match']>;
      try {
        m = this.match(r, segs);
      } catch {
        return sendJson(res, 400, { error: 'malformed percent-encoding in the path' });
      }
      if (!m) continue;
      if (r.method !== method && !(method === 'HEAD' && r.method === 'GET')) {
        allowed.add(r.method);
        continue;
      }
      try {
        await r.handler({ req, res, params: m.params, rawParams: m.rawParams, url });
      } catch (e) {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        if (e instanceof HttpError) return sendJson(res, e.status, { error: e.message }, e.headers);
        if (e instanceof UsageError) return sendJson(res, 400, { error: e.message });
        return sendJson(res, 500, { error: 'internal error' });
      }
      return;
    }
    if (allowed.size > 0) {
      res.setHeader('allow', [...allowed].join(', '));
      return sendJson(res, 405, { error: `method ${method} not allowed` });
    }
    sendJson(res, 404, { error: 'not found' });
  }
}

function decode(s: string): string {
  return decodeURIComponent(s);
}
