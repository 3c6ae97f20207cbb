/**
 * The ModelScope protocol under `/ms`, as modelscope 1.40 (modelscope_hub 0.5) calls it: model
 * info, revisions, `repo/files` and `repo?Revision=&FilePath=` downloads (files are served here
 * rather than redirected to object storage). Other routes it probes (region acceleration info)
 * get a 404, which it treats as "none".
 */
import type { ServerResponse } from 'node:http';
import { encodePath } from '../sources/source.js';
import type { Access, Pinned } from './catalog.js';
import { credentialsOf, type Credentials } from './credentials.js';
import { isRepoName, relay, sendJson, serveFile, statusOf, type MirrorContext, type Registrar, type RouteContext } from './serve.js';
import { msError, msFileRows, msModelInfo, msOk, msRevisions } from './views.js';

/** ModelScope's code for "does not exist". */
const NOT_FOUND = 10010205;

function msFail(res: ServerResponse, status: number, message: string, head: boolean): void {
  sendJson(res, status, msError(status === 404 ? NOT_FOUND : status, message), {}, head);
}

const isHead = (rc: RouteContext) => rc.req.method === 'HEAD';

export function registerMs(router: Registrar, ctx: MirrorContext): void {
  function start(rc: RouteContext, route: string): { id: string; creds: Credentials } | undefined {
    const id = `${rc.params.org}/${rc.params.name}`;
    ctx.metrics.request('ms', route);
    if (!isRepoName(rc.params.org, rc.params.name)) return void msFail(rc.res, 404, `Model ${id} does not exist`, isHead(rc));
    if (!ctx.allowed('ms', id)) return void msFail(rc.res, 403, `${id} is not mirrored by this node (mirror.allow)`, isHead(rc));
    return { id, creds: credentialsOf('ms', rc.req.headers) };
  }

  async function pin(rc: RouteContext, id: string, creds: Credentials, access: Access): Promise<Pinned | undefined> {
    if (access.kind === 'denied') return void relay(rc.res, access.res, isHead(rc));
    if (access.kind === 'unavailable') return void msFail(rc.res, 503, access.message, isHead(rc));
    const [org, name] = id.split('/') as [string, string];
    try {
      return await ctx.catalog.manifest({ hub: 'ms', org, name }, access.commit, creds, ctx.signal);
    } catch (e) {
      return void msFail(rc.res, statusOf(e), (e as Error).message, isHead(rc));
    }
  }

  async function open(rc: RouteContext, route: string): Promise<{ creds: Credentials; pinned: Pinned } | undefined> {
    const s = start(rc, route);
    if (!s) return undefined;
    const rev = rc.url.searchParams.get('Revision') || 'master';
    const pinned = await pin(rc, s.id, s.creds, await ctx.catalog.authorize('ms', s.id, rev, s.creds, ctx.signal));
    return pinned ? { creds: s.creds, pinned } : undefined;
  }

  /** Model info and revisions: the hub's own answer when it is up (it is also the access check). */
  const passThrough = (route: 'info' | 'revisions') => async (rc: RouteContext) => {
    const s = start(rc, route);
    if (!s) return;
    const suffix = route === 'revisions' ? '/revisions' : '';
    const up = await ctx.upstream.get('ms', `/api/v1/models/${encodePath(s.id)}${suffix}${rc.url.search}`, s.creds, ctx.signal);
    if (up) {
      if (route === 'revisions') ctx.catalog.learn('ms', s.id, 'master', s.creds, up);
      return relay(rc.res, up, isHead(rc));
    }
    const pinned = await pin(rc, s.id, s.creds, await ctx.catalog.decideOffline('ms', s.id, 'master', s.creds));
    if (!pinned) return;
    const created = Math.floor(Date.parse(pinned.publishedAt ?? '1970-01-01T00:00:00Z') / 1000);
    const data = route === 'revisions' ? msRevisions(await ctx.catalog.knownRevisions('ms', s.id), created) : msModelInfo(s.id, created);
    sendJson(rc.res, 200, msOk(data), {}, isHead(rc));
  };
  router.add('GET', '/ms/api/v1/models/:org/:name', passThrough('info'));
  router.add('GET', '/ms/api/v1/models/:org/:name/revisions', passThrough('revisions'));

  router.add('GET', '/ms/api/v1/models/:org/:name/repo/files', async (rc) => {
    const opened = await open(rc, 'files');
    if (!opened) return;
    const q = rc.url.searchParams;
    const root = (q.get('Root') ?? '').replace(/^\/+|\/+$/g, '');
    const created = Math.floor(Date.parse(opened.pinned.publishedAt ?? '1970-01-01T00:00:00Z') / 1000);
    const rows = msFileRows(opened.pinned.manifest, root, (q.get('Recursive') ?? 'false').toLowerCase() === 'true', created);
    if (!rows) return msFail(rc.res, 404, `Path ${root} does not exist`, isHead(rc));
    sendJson(rc.res, 200, msOk({ Files: rows, IsVisual: 0 }), {}, isHead(rc));
  });

  router.add('GET', '/ms/api/v1/models/:org/:name/repo', async (rc) => {
    const path = rc.url.searchParams.get('FilePath');
    if (!path) return msFail(rc.res, 400, 'FilePath is required', isHead(rc));
    const opened = await open(rc, 'download');
    if (!opened) return;
    const { pinned, creds } = opened;
    const file = pinned.manifest.files.find((f) => f.path === path);
    if (!file) return msFail(rc.res, pinned.complete ? 404 : 503, `File ${path} does not exist in ${pinned.manifest.commit}`, isHead(rc));
    const name = path.split('/').pop()!;
    const headers = {
      'content-type': 'application/octet-stream',
      'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(name)}`,
      ...(file.sha256 ? { etag: `"${file.sha256}"` } : {}),
    };
    await serveFile(ctx, rc, 'ms', pinned, file, creds, headers, (status, message) => msFail(rc.res, status, message, false));
  });
}
