import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Cdn } from './cdn.js';
import { FaultQueue } from './faults.js';
import { HfApi } from './hf.js';
import { MsApi } from './ms.js';
import { buildRepo, describeRepo, filesFromDir, type Repo } from './repos.js';
import { sendJson, type Ctx, type HubState } from './respond.js';
import type { AddedRepo, FakeHub, FakeRepoSpec, FaultSpec, RequestLogEntry, StartOptions } from './types.js';

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** Splits the raw path into decoded segments, so `%2F` inside a revision stays one segment. */
function segments(rawPath: string): string[] | undefined {
  try {
    return rawPath.split('/').slice(1).map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
}

export async function startFakeHub(opts: StartOptions = {}): Promise<FakeHub> {
  const host = opts.host ?? '127.0.0.1';
  const cdnHost = opts.cdnHost ?? '127.0.0.2';
  const repos = new Map<string, Repo>();
  const log: RequestLogEntry[] = [];
  const faults = new FaultQueue();
  const stalled = new Set<ServerResponse>();

  let hfEndpoint = '';
  let cdnOrigin = '';
  const hub: FakeHub = {
    hfEndpoint: '',
    msEndpoint: '',
    cdnOrigin: '',
    log,
    signedUrlTtlMs: opts.signedUrlTtlMs ?? 3_600_000,
    ...(opts.perConnectionRate === undefined ? {} : { perConnectionRate: opts.perConnectionRate }),
    addRepo,
    addRepoFromDir,
    fault: (spec: FaultSpec) => faults.add(spec),
    clearFaults: () => faults.clear(),
    bytesSent,
    resetStats: () => {
      log.length = 0;
    },
    close,
  };
  const state: HubState = { faults, stalled, rate: () => hub.perConnectionRate };
  const cdn = new Cdn(
    () => cdnOrigin,
    () => hub.signedUrlTtlMs,
  );
  const hf = new HfApi(repos, cdn, () => hfEndpoint, Math.max(1, opts.treePageSize ?? 1000));
  const ms = new MsApi(repos, cdn);

  function context(req: IncomingMessage, res: ServerResponse, which: 'hub' | 'cdn'): Ctx {
    const entry: RequestLogEntry = {
      host: which,
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      status: 0,
      headers: { ...req.headers },
      bodyBytes: 0,
    };
    if (req.headers.range !== undefined) entry.range = req.headers.range;
    if (req.socket.remoteAddress !== undefined) entry.remoteAddress = req.socket.remoteAddress;
    log.push(entry);
    const url = new URL(req.url ?? '/', 'http://fakehub.invalid');
    let urlPath = url.pathname;
    try {
      urlPath = decodeURIComponent(url.pathname);
    } catch {
      // keep the raw path
    }
    // Request bodies are never needed; drain them so keep-alive works.
    req.resume();
    return { req, res, host: which, url, urlPath, entry, state };
  }

  const hubServer = createServer((req, res) => {
    const ctx = context(req, res, 'hub');
    const segs = segments(ctx.url.pathname);
    if (segs && (hf.handle(ctx, segs) || ms.handle(ctx, segs))) return;
    sendJson(ctx, 404, { error: 'Not Found' });
  });
  const cdnServer = createServer((req, res) => cdn.handle(context(req, res, 'cdn')));

  const hubPort = await listen(hubServer, host, opts.port ?? 0);
  let cdnPort: number;
  try {
    cdnPort = await listen(cdnServer, cdnHost, opts.cdnPort ?? 0);
  } catch (err) {
    hubServer.close();
    throw err;
  }
  hfEndpoint = `http://${urlHost(host)}:${hubPort}`;
  cdnOrigin = `http://${urlHost(cdnHost)}:${cdnPort}`;
  hub.hfEndpoint = hfEndpoint;
  hub.msEndpoint = hfEndpoint;
  hub.cdnOrigin = cdnOrigin;

  async function addRepo(spec: FakeRepoSpec): Promise<AddedRepo> {
    const repo = await buildRepo(spec);
    // A hub keeps history: adding a repo again moves its branches and tags, and the commits it had
    // stay reachable by id (a lock pinned to one must still pull it).
    const before = repos.get(repo.id);
    for (const [commit, rev] of before?.byCommit ?? []) if (!repo.byCommit.has(commit)) repo.byCommit.set(commit, rev);
    repos.set(repo.id, repo);
    for (const rev of repo.byCommit.values()) for (const f of rev.files.values()) if (f.lfs) cdn.blobs.set(f.sha256, f);
    return describeRepo(repo);
  }

  async function addRepoFromDir(id: string, dir: string, more: Omit<FakeRepoSpec, 'id' | 'files'> = {}): Promise<AddedRepo> {
    return addRepo({ ...more, id, files: await filesFromDir(dir) });
  }

  function bytesSent(filter: { host?: 'hub' | 'cdn'; path?: string } = {}): number {
    let n = 0;
    for (const e of log) {
      if (filter.host && e.host !== filter.host) continue;
      if (filter.path !== undefined && e.path !== filter.path && !urlPathIs(e.url, filter.path)) continue;
      n += e.bodyBytes;
    }
    return n;
  }

  let closing: Promise<void> | undefined;
  function close(): Promise<void> {
    closing ??= (async () => {
      for (const res of stalled) res.destroy();
      stalled.clear();
      const done = Promise.all([hubServer, cdnServer].map((s) => new Promise<void>((r) => s.close(() => r()))));
      hubServer.closeAllConnections();
      cdnServer.closeAllConnections();
      await done;
    })();
    return closing;
  }

  return hub;
}

function urlPathIs(rawUrl: string, path: string): boolean {
  const pathname = new URL(rawUrl, 'http://x.invalid').pathname;
  if (pathname === path) return true;
  try {
    return decodeURIComponent(pathname) === path;
  } catch {
    return false;
  }
}
