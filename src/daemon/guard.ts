/**
 * Who may use the node API (config `api`). The daemon listens on the node's IP (hostPort), where
 * any pod or host that reaches it could otherwise start 200 GB downloads or throttle the node:
 *  - routes that change something (`POST /v1/pulls`, `PUT /v1/config/...`) need
 *    `Authorization: Bearer <api.tokenFile's token>`; without a configured token they are taken
 *    only from loopback clients, so a daemon started by hand on a laptop needs no setup;
 *  - routes that only read are open, unless `api.protectReads`, which puts them under the same
 *    rule. `/healthz` and `/readyz` (probes) and `/metrics` (counts, no model names; scrapers
 *    rarely carry tokens) stay open either way;
 *  - every changing request counts against its client's budget (ClientLimiter): 429 with
 *    Retry-After past it. Counted before the token check, so guessing tokens is throttled too.
 * The peer routes (`/v1/peer/...`) check the peer token themselves and are not guarded here.
 */
import type { IncomingMessage } from 'node:http';
import type { BearerToken } from '../http/bearer.js';
import { HttpError } from '../http/respond.js';
import type { ClientLimiter } from './client-limit.js';
import type { Handler } from './router.js';

/** `mutate`: changes state; `read`: protected by `api.protectReads`; `open`: always open. */
export type Access = 'open' | 'read' | 'mutate';

/** Why a request was refused (the `reason` label of `swift_fetch_api_refused_total`). */
export type Refusal = 'unauthorized' | 'forbidden' | 'rate_limited' | 'too_many_models';

export interface ApiGuardOptions {
  token?: BearerToken | undefined;
  protectReads: boolean;
  limiter?: ClientLimiter | undefined;
  onRefused?: (reason: Refusal) => void;
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  return /^(127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$/i.test(address);
}

export class ApiGuard {
  constructor(private readonly opts: ApiGuardOptions) {}

  /** The handler, behind this guard's check for `access`. */
  wrap(access: Access, handler: Handler): Handler {
    if (access === 'open') return handler;
    return (rc) => {
      this.check(rc.req, access);
      return handler(rc);
    };
  }

  /** Throws the HttpError (401, 403, 429) that refuses `req`, if any. */
  check(req: IncomingMessage, access: Access): void {
    if (access === 'open' || (access === 'read' && !this.opts.protectReads)) return;
    const remote = req.socket.remoteAddress;
    if (access === 'mutate' && this.opts.limiter) {
      const waitMs = this.opts.limiter.take(remote);
      if (waitMs > 0) {
        const secs = Math.max(1, Math.ceil(waitMs / 1000));
        throw this.refuse('rate_limited', 429, `too many requests from ${remote ?? 'this client'}: try again in ${secs} s`, { 'retry-after': String(secs) });
      }
    }
    const token = this.opts.token;
    if (token) {
      if (token.accepts(req.headers.authorization)) return;
      const why = req.headers.authorization === undefined ? 'this route needs the API token' : 'the API token was not accepted';
      throw this.refuse('unauthorized', 401, `${why} (Authorization: Bearer <token from the daemon's api.tokenFile>)`, { 'www-authenticate': 'Bearer realm="swift-fetch"' });
    }
    if (!isLoopback(remote)) {
      throw this.refuse('forbidden', 403, 'this daemon has no api.tokenFile, so it takes this route only from loopback clients');
    }
  }

  /** Count a refusal and build its error (also used for refusals decided elsewhere). */
  refuse(reason: Refusal, status: number, message: string, headers: Record<string, string> = {}): HttpError {
    this.opts.onRefused?.(reason);
    return new HttpError(status, message, headers);
  }
}
