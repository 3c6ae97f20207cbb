/**
 * The Hugging Face ModelHub protocol under `/hf`, as huggingface_hub 2.x, `hf download` and
 * transformers call it: model info (`/api/models/{id}[/revision/{rev}]`), the tree listing
 * (paginated with `Link`), and `resolve` (HEAD with X-Repo-Commit / ETag / X-Linked-Etag /
 * X-Linked-Size, GET with Range). Files are answered with 200 at the resolve URL itself: there is
 * no CDN hop, and the client keeps the URL it resolved.
 */
import type { ServerResponse } from 'node:http';
import { hfEtag } from '../core/manifest.js';
import { encodePath } from '../sources/source.js';
import type { Access, Pinned } from './catalog.js';
import { credentialsOf, type Credentials } from './credentials.js';
import { baseUrl, isRepoName, relay, sendJson, serveFile, statusOf, type MirrorContext, type Registrar, type RouteContext } from './serve.js';
import { hfModelInfo, hfTreeEntries, page } from './views.js';

function hfError(res: ServerResponse, status: number, code: string | undefined, message: string, head: boolean, commit?: string): void {
  sendJson(res, status, { error: message }, { 'x-error-message': message, ...(code ? { 'x-error-code': code } : {}), ...(commit ? { 'x-repo-commit': commit } : {}) }, head);
}

const isHead = (rc: RouteContext) => rc.req.method === 'HEAD';

export function registerHf(router: Registrar, ctx: MirrorContext): void {
  /**
   * Everything a repo route needs first: the repo is mirrored, the client may read it, and the
   * revision is pinned. Undefined when an answer was already sent.
   */
  async function open(rc: RouteContext, route: string, rev: string): Promise<{ id: string; creds: Credentials; pinned: Pinned } | undefined> {
    const id = `${rc.params.org}/${rc.params.name}`;
    ctx.metrics.request('hf', route);
    if (!isRepoName(rc.params.org, rc.params.name)) return void hfError(rc.res, 404, 'RepoNotFound', 'Repository not found', isHead(rc));
    if (!ctx.allowed('hf', id)) return void hfError(rc.res, 403, undefined, `${id} is not mirrored by this node (mirror.allow)`, isHead(rc));
    const creds = credentialsOf('hf', rc.req.headers);
    const access = await ctx.catalog.authorize('hf', id, rev, creds, ctx.signal);
    return pin(rc, id, creds, access);
  }

  async function pin(rc: RouteContext, id: string, creds: Credentials, access: Access): Promise<{ id: string; creds: Credentials; pinned: Pinned } | undefined> {
    if (access.kind === 'denied') return void relay(rc.res, access.res, isHead(rc));
    if (access.kind === 'unavailable') return void hfError(rc.res, 503, undefined, access.message, isHead(rc));
    const [org, name] = id.split('/') as [string, string];
    try {
      const pinned = await ctx.catalog.manifest({ hub: 'hf', org, name }, access.commit, creds, ctx.signal);
      return { id, creds, pinned };
    } catch (e) {
      const code = (e as { code?: string }).code === 'ESF_REVISION_NOT_FOUND' ? 'RevisionNotFound' : statusOf(e) === 404 ? 'RepoNotFound' : undefined;
      return void hfError(rc.res, statusOf(e), code, (e as Error).message, isHead(rc));
    }
  }

  // huggingface_hub's CLI fetches this registry best-effort; an empty one turns agent detection off.
  router.add('GET', '/hf/api/agent-harnesses', ({ res }) => sendJson(res, 200, { standardEnvVars: [], harnesses: {} }));

  const info = async (rc: RouteContext) => {
    const id = `${rc.params.org}/${rc.params.name}`;
    const rev = rc.params.rev ?? 'main';
    ctx.metrics.request('hf', 'info');
    if (!isRepoName(rc.params.org, rc.params.name)) return hfError(rc.res, 404, 'RepoNotFound', 'Repository not found', isHead(rc));
    if (!ctx.allowed('hf', id)) return hfError(rc.res, 403, undefined, `${id} is not mirrored by this node (mirror.allow)`, isHead(rc));
    const creds = credentialsOf('hf', rc.req.headers);
    const path = `/api/models/${encodePath(id)}${rc.params.rev === undefined ? '' : `/revision/${encodeURIComponent(rev)}`}${rc.url.search}`;
    const expand = [...rc.url.searchParams.getAll('expand'), ...rc.url.searchParams.getAll('expand[]')];
    const up = await ctx.upstream.get('hf', path, creds, ctx.signal);
    if (up) {
      // The hub's own model info, as it is (fields we do not model, cards, configs): also our access check.
      if (expand.length === 0) ctx.catalog.learn('hf', id, rev, creds, up);
      return relay(rc.res, up, isHead(rc));
    }
    const opened = await pin(rc, id, creds, await ctx.catalog.decideOffline('hf', id, rev, creds));
    if (!opened) return;
    const blobs = ['true', '1'].includes(rc.url.searchParams.get('blobs') ?? '');
    const body = hfModelInfo(id, opened.pinned.manifest, { blobs, expand, ...(opened.pinned.publishedAt ? { publishedAt: opened.pinned.publishedAt } : {}) });
    sendJson(rc.res, 200, body, {}, isHead(rc));
  };
  router.add('GET', '/hf/api/models/:org/:name', info);
  router.add('GET', '/hf/api/models/:org/:name/revision/:rev', info);

  const tree = async (rc: RouteContext) => {
    const rev = rc.params.rev!;
    const opened = await open(rc, 'tree', rev);
    if (!opened) return;
    const { manifest } = opened.pinned;
    const under = (rc.params.path ?? '').replace(/\/+$/, '');
    const q = rc.url.searchParams;
    const entries = hfTreeEntries(manifest, under, ['true', '1', 'True'].includes(q.get('recursive') ?? ''));
    if (!entries) return hfError(rc.res, 404, 'EntryNotFound', `${under} does not exist on "${rev}"`, isHead(rc), manifest.commit);
    const { items, next } = page(entries, q.get('cursor'), ctx.treePageSize);
    const headers: Record<string, string> = {};
    if (next) {
      const params = new URLSearchParams(q);
      params.set('cursor', next);
      const tail = under ? `/${encodePath(under)}` : '';
      headers.link = `<${baseUrl(rc.req)}/hf/api/models/${encodePath(opened.id)}/tree/${encodeURIComponent(rev)}${tail}?${params}>; rel="next"`;
    }
    sendJson(rc.res, 200, items, headers, isHead(rc));
  };
  router.add('GET', '/hf/api/models/:org/:name/tree/:rev', tree);
  router.add('GET', '/hf/api/models/:org/:name/tree/:rev/*path', tree);

  router.add('GET', '/hf/:org/:name/resolve/:rev/*path', async (rc) => {
    const opened = await open(rc, 'resolve', rc.params.rev!);
    if (!opened) return;
    const { pinned, creds } = opened;
    const commit = pinned.manifest.commit;
    const file = pinned.manifest.files.find((f) => f.path === rc.params.path);
    if (!file) {
      if (!pinned.complete) return hfError(rc.res, 503, undefined, `the hub is unreachable and ${rc.params.path} is not in this node's copy of ${commit}`, isHead(rc));
      return hfError(rc.res, 404, 'EntryNotFound', `${rc.params.path} does not exist on "${rc.params.rev}"`, isHead(rc), commit);
    }
    const etag = `"${hfEtag(file)}"`;
    const headers = {
      'x-repo-commit': commit,
      etag,
      'content-type': 'application/octet-stream',
      ...(file.lfs && file.sha256 ? { 'x-linked-etag': etag, 'x-linked-size': String(file.size) } : {}),
    };
    await serveFile(ctx, rc, 'hf', pinned, file, creds, headers, (status, message) => hfError(rc.res, status, undefined, message, false, commit));
  });
}
