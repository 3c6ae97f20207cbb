/**
 * What both hub protocols share: relaying the hub's own refusals, building absolute URLs from the
 * address a request came in on, and sending a file of a pinned revision (from the store, or
 * pulled through while the client waits).
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { isSwiftFetchError } from '../core/errors.js';
import type { FileEntry } from '../core/manifest.js';
import { parseRef, type ModelHub } from '../core/ref.js';
import { blobKeyOf, formatBlobKey } from '../core/blob-key.js';
import type { BlobRequest } from '../core/transfer.js';
import type { Catalog, Pinned } from './catalog.js';
import { ANONYMOUS, type Credentials } from './credentials.js';
import type { MirrorMetrics } from './metrics.js';
import type { BlobProgress } from './progress.js';
import type { Publisher } from './publish.js';
import { parseRange } from './range.js';
import { sendFollowing, sendStored, type Head } from './stream.js';
import type { BlobSupply } from './supply.js';
import type { ApiResponse, Upstream } from './upstream.js';

/** How long after a failed verification a Range request gets the whole file instead (see serveFile). */
const DISTRUST_RANGES_MS = 10 * 60_000;

export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  url: URL;
}

/** The slice of the daemon's Router the mirror needs (structural: the mirror does not import the daemon). */
export interface Registrar {
  add(method: string, pattern: string, handler: (rc: RouteContext) => void | Promise<void>): unknown;
}

export interface MirrorContext {
  catalog: Catalog;
  upstream: Upstream;
  supply: BlobSupply;
  progress: BlobProgress;
  publisher: Publisher;
  metrics: MirrorMetrics;
  allowed: (hub: ModelHub, repo: string) => boolean;
  signal: AbortSignal;
  logger: Logger;
  treePageSize: number;
}

/** A repo name as the hubs allow it (what `parseRef` accepts): anything else is no repo of theirs. */
export function isRepoName(org: string | undefined, name: string | undefined): boolean {
  try {
    return org !== undefined && name !== undefined && !org.includes('@') && !name.includes('@') && parseRef(`hf://${org}/${name}`) !== undefined;
  } catch {
    return false;
  }
}

/** `http://host:port` as the client addressed us (Host header, else the local socket address). */
export function baseUrl(req: IncomingMessage): string {
  const scheme = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  const host = req.headers.host;
  if (host && /^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(host)) return `${scheme}://${host}`;
  const addr = req.socket.localAddress ?? '127.0.0.1';
  return `${scheme}://${addr.includes(':') ? `[${addr}]` : addr}:${req.socket.localPort}`;
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: OutgoingHttpHeaders = {}, head = false): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(head ? undefined : text);
}

const RELAYED = ['content-type', 'x-error-code', 'x-error-message', 'x-repo-commit', 'www-authenticate', 'retry-after', 'ratelimit'];

/** The hub's own answer, as it gave it (status, error headers, body). */
export function relay(res: ServerResponse, up: ApiResponse, head: boolean): void {
  const headers: OutgoingHttpHeaders = { 'content-length': Buffer.byteLength(up.body), 'cache-control': 'no-store' };
  for (const h of RELAYED) {
    const v = up.headers[h];
    if (v !== undefined) headers[h] = v;
  }
  res.writeHead(up.status, headers);
  res.end(head ? undefined : up.body);
}

/** HTTP status for an error thrown while pinning a revision (listing it on the client's behalf). */
export function statusOf(e: unknown): number {
  if (!isSwiftFetchError(e)) return 500;
  if (e.exitCode === 3) return 404;
  if (e.exitCode === 4) return 403;
  return 502;
}

/** The credentials a download of this repo runs with: none for public repos, else the client's (checked). */
function fetchCredentials(ctx: MirrorContext, hub: ModelHub, repo: string, creds: Credentials): Credentials {
  return ctx.catalog.isPublic(hub, repo) ? ANONYMOUS : creds;
}

/**
 * Send `file` of a pinned revision: HEAD answers with headers only; GET with the bytes (Range
 * honoured). `fail` writes a hub-style error when a pull-through fails before any byte went out.
 */
export async function serveFile(
  ctx: MirrorContext,
  rc: RouteContext,
  hub: ModelHub,
  pinned: Pinned,
  file: FileEntry,
  creds: Credentials,
  headers: OutgoingHttpHeaders,
  fail: (status: number, message: string) => void,
): Promise<void> {
  const { req, res } = rc;
  const { manifest } = pinned;
  const key = blobKeyOf(file, manifest.commit);
  const state = ctx.progress.get(key);
  // Bytes of a blob that failed verification went out to someone; a client resuming now may hold
  // them. The whole file (200 to a Range request) makes it start over: both clients handle that.
  const distrust = state?.mismatchAt !== undefined && Date.now() - state.mismatchAt < DISTRUST_RANGES_MS;
  const range = distrust ? undefined : parseRange(typeof req.headers.range === 'string' ? req.headers.range : undefined, file.size);
  const base: OutgoingHttpHeaders = { ...headers, 'accept-ranges': 'bytes', 'cache-control': 'no-store' };
  if (range === 'unsatisfiable') {
    res.writeHead(416, { ...base, 'content-range': `bytes */${file.size}`, 'content-length': 0 });
    return void res.end();
  }
  const { start, end } = range ?? { start: 0, end: file.size };
  const head: Head = range
    ? { status: 206, headers: { ...base, 'content-range': `bytes ${start}-${end - 1}/${file.size}`, 'content-length': end - start } }
    : { status: 200, headers: { ...base, 'content-length': file.size } };
  if (req.method === 'HEAD') {
    res.writeHead(head.status, head.headers);
    return void res.end();
  }
  const repo = `${manifest.ref.org}/${manifest.ref.name}`;
  const onBytes = (n: number) => ctx.metrics.served(hub, n);
  const path = await ctx.supply.stored(file);
  if (path) {
    ctx.metrics.hit(hub);
    ctx.publisher.touch(manifest.ref, manifest.commit);
    return sendStored(res, head, path, start, end, { onBytes });
  }
  // Verified but not yet moved into the store: no wait either, so a hit.
  if (state?.verified && !state.failed) ctx.metrics.hit(hub);
  else ctx.metrics.miss(hub);
  ctx.publisher.want(pinned, formatBlobKey(key));
  const request: BlobRequest = {
    key,
    label: file.path,
    size: file.size,
    ...(file.sha256 ? { sha256: file.sha256 } : {}),
    ...(file.gitOid ? { gitOid: file.gitOid } : {}),
    origin: ctx.upstream.source(hub, fetchCredentials(ctx, hub, repo, creds)).origin(manifest, file),
  };
  const target = {
    key,
    size: file.size,
    stored: () => ctx.supply.stored(file),
    ensure: () => ctx.supply.ensure(request, { gitAlias: hub === 'ms' && !file.lfs }),
  };
  await sendFollowing(res, head, target, start, end, { progress: ctx.progress, onBytes, onWaiting: (d) => ctx.metrics.waiting(d), signal: ctx.signal }, (message) =>
    fail(502, message),
  );
}
