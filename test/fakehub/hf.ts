import type { OutgoingHttpHeaders } from 'node:http';
import type { Cdn } from './cdn.js';
import { resolveRevision, sha1, type Repo, type Revision } from './repos.js';
import { sendEmpty, sendFile, sendJson, type Ctx } from './respond.js';

/**
 * The Hugging Face Hub protocol as huggingface_hub 2.x uses it for downloads:
 * revision info, paginated tree listing, and resolve (HEAD/GET) with LFS redirects.
 */
export class HfApi {
  constructor(
    private readonly repos: Map<string, Repo>,
    private readonly cdn: Cdn,
    private readonly endpoint: () => string,
    private readonly treePageSize: number,
  ) {}

  /** Returns false when the path is not an HF route. */
  handle(ctx: Ctx, segs: string[]): boolean {
    const method = ctx.req.method;
    if (segs.length === 2 && segs[0] === 'api' && segs[1] === 'agent-harnesses' && method === 'GET') {
      // huggingface_hub >= 2 fetches this best-effort registry once a day; an empty one disables agent detection.
      sendJson(ctx, 200, { standardEnvVars: [], harnesses: {} });
      return true;
    }
    if (segs[0] === 'api' && segs[1] === 'models' && segs.length >= 4) {
      if (method !== 'GET') return false;
      const repo = this.repo(ctx, `${segs[2]}/${segs[3]}`);
      if (!repo) return true;
      const rest = segs.slice(4);
      if (rest.length === 0) return this.info(ctx, repo, 'main'), true;
      if (rest[0] === 'revision' && rest.length === 2) return this.info(ctx, repo, rest[1]!), true;
      if (rest[0] === 'tree' && rest.length >= 2) return this.tree(ctx, repo, rest[1]!, rest.slice(2).join('/')), true;
      return false;
    }
    if (segs.length >= 5 && segs[2] === 'resolve' && (method === 'GET' || method === 'HEAD')) {
      const repo = this.repo(ctx, `${segs[0]}/${segs[1]}`);
      if (!repo) return true;
      this.resolve(ctx, repo, segs[3]!, segs.slice(4).join('/'));
      return true;
    }
    return false;
  }

  /** Looks the repo up and checks access; on failure the error response is already sent. */
  private repo(ctx: Ctx, id: string): Repo | undefined {
    const repo = this.repos.get(id);
    const auth = ctx.req.headers.authorization;
    if (!repo || !repo.hf) {
      // Real HF answers 401 to anonymous callers so as not to leak which private repos exist.
      error(ctx, auth ? 404 : 401, 'RepoNotFound', 'Repository not found');
      return undefined;
    }
    if (repo.gatedToken !== undefined) {
      if (!auth) {
        error(ctx, 401, 'GatedRepo', `Access to model ${id} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
        return undefined;
      }
      if (auth !== `Bearer ${repo.gatedToken}`) {
        error(ctx, 403, 'GatedRepo', `Access to model ${id} is restricted and you are not in the authorized list. Visit https://huggingface.co/${id} to ask for access.`);
        return undefined;
      }
    }
    return repo;
  }

  private revision(ctx: Ctx, repo: Repo, rev: string): Revision | undefined {
    const r = resolveRevision(repo, 'hf', rev);
    if (!r) error(ctx, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
    return r;
  }

  private info(ctx: Ctx, repo: Repo, rev: string): void {
    const r = this.revision(ctx, repo, rev);
    if (!r) return;
    // Like the real Hub, siblings carry sizes and blob ids only with ?blobs=true.
    const blobs = ctx.url.searchParams.get('blobs') === 'true' || ctx.url.searchParams.get('blobs') === '1';
    const siblings: unknown[] = r.paths.map((p) => {
      const f = r.files.get(p)!;
      if (!blobs) return { rfilename: p };
      return {
        rfilename: p,
        size: f.size,
        blobId: f.listedOid,
        ...(f.lfs ? { lfs: { size: f.size, sha256: f.sha256, pointerSize: f.pointerSize } } : {}),
      };
    });
    for (const x of repo.extraListing) siblings.push(blobs ? { rfilename: x.path, size: x.size ?? 0, blobId: sha1(x.path) } : { rfilename: x.path });
    const created = new Date(r.createdAt * 1000).toISOString();
    const full: Record<string, unknown> = {
      _id: sha1(repo.id).slice(0, 24),
      id: repo.id,
      modelId: repo.id,
      author: repo.org,
      sha: r.commit,
      lastModified: created,
      createdAt: created,
      private: false,
      gated: repo.gatedToken !== undefined ? 'manual' : false,
      disabled: false,
      downloads: 0,
      likes: 0,
      tags: [],
      library_name: 'transformers',
      siblings,
      usedStorage: r.paths.reduce((n, p) => n + r.files.get(p)!.size, 0),
    };
    const expand = ctx.url.searchParams.getAll('expand').concat(ctx.url.searchParams.getAll('expand[]'));
    if (expand.length > 0) {
      const only: Record<string, unknown> = { _id: full._id, id: full.id };
      for (const k of expand) if (k in full) only[k] = full[k];
      sendJson(ctx, 200, only);
      return;
    }
    sendJson(ctx, 200, full);
  }

  private tree(ctx: Ctx, repo: Repo, rev: string, under: string): void {
    const r = this.revision(ctx, repo, rev);
    if (!r) return;
    const q = ctx.url.searchParams;
    const recursive = q.get('recursive') === 'true' || q.get('recursive') === '1' || q.get('recursive') === 'True';
    const prefix = under ? `${under}/` : '';
    if (under && !r.dirs.includes(under)) {
      error(ctx, 404, 'EntryNotFound', `${under} does not exist on "${rev}"`, r.commit);
      return;
    }
    const inScope = (p: string): boolean => p.startsWith(prefix) && (recursive || !p.slice(prefix.length).includes('/'));
    type Item = { key: string; value: Record<string, unknown> };
    const items: Item[] = [];
    for (const d of r.dirs) {
      if (inScope(d)) items.push({ key: d, value: { type: 'directory', oid: sha1(`tree\0${r.commit}\0${d}`), size: 0, path: d } });
    }
    for (const p of r.paths) {
      if (!inScope(p)) continue;
      const f = r.files.get(p)!;
      const value: Record<string, unknown> = { type: 'file', oid: f.listedOid, size: f.size, path: p };
      if (f.lfs) value.lfs = { oid: f.sha256, size: f.size, pointerSize: f.pointerSize };
      items.push({ key: p, value });
    }
    items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    // Hostile entries go out verbatim: the client must be the one to refuse them.
    if (!under) for (const x of repo.extraListing) items.push({ key: x.path, value: { type: 'file', oid: sha1(x.path), size: x.size ?? 0, path: x.path } });

    const cursor = q.get('cursor');
    const start = cursor ? Number.parseInt(Buffer.from(cursor, 'base64url').toString(), 10) || 0 : 0;
    const page = items.slice(start, start + this.treePageSize).map((i) => i.value);
    const headers: OutgoingHttpHeaders = {};
    if (start + this.treePageSize < items.length) {
      const next = new URLSearchParams();
      for (const [k, v] of q) if (k !== 'cursor') next.append(k, v);
      next.set('cursor', Buffer.from(String(start + this.treePageSize)).toString('base64url'));
      const tail = under ? `/${under.split('/').map(encodeURIComponent).join('/')}` : '';
      headers.link = `<${this.endpoint()}/api/models/${repo.id}/tree/${encodeURIComponent(rev)}${tail}?${next.toString()}>; rel="next"`;
    }
    sendJson(ctx, 200, page, headers);
  }

  private resolve(ctx: Ctx, repo: Repo, rev: string, path: string): void {
    ctx.entry.path = path;
    const r = this.revision(ctx, repo, rev);
    if (!r) return;
    const f = r.files.get(path);
    if (!f) {
      error(ctx, 404, 'EntryNotFound', `${path} does not exist on "${rev}"`, r.commit);
      return;
    }
    if (f.lfs) {
      sendEmpty(
        ctx,
        302,
        {
          location: this.cdn.signedUrl(repo.id, f),
          'x-repo-commit': r.commit,
          'x-linked-etag': `"${f.sha256}"`,
          'x-linked-size': String(f.size),
          etag: `"${f.sha256}"`,
          'content-length': 0,
        },
        path,
      );
      return;
    }
    const name = path.split('/').pop()!;
    sendFile(ctx, f, {
      'content-type': contentType(path),
      etag: `"${f.contentOid}"`,
      'x-repo-commit': r.commit,
      'content-disposition': `inline; filename*=UTF-8''${encodeURIComponent(name)}; filename="${name.replace(/[^\x20-\x7e]|"/g, '_')}"`,
    });
  }
}

function contentType(path: string): string {
  if (path.endsWith('.json')) return 'application/json; charset=utf-8';
  if (/\.(md|txt|py|yaml|yml)$/.test(path)) return 'text/plain; charset=utf-8';
  return 'application/octet-stream';
}

function error(ctx: Ctx, status: number, code: string, message: string, commit?: string): void {
  const headers: OutgoingHttpHeaders = { 'x-error-code': code, 'x-error-message': message };
  if (commit) headers['x-repo-commit'] = commit;
  if (ctx.req.method === 'HEAD') {
    sendEmpty(ctx, status, headers);
    return;
  }
  sendJson(ctx, status, { error: message }, headers);
}
