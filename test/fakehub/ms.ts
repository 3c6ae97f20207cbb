import { randomUUID } from 'node:crypto';
import type { Cdn } from './cdn.js';
import { resolveRevision, sha1, type Repo, type Revision } from './repos.js';
import { sendEmpty, sendFile, sendJson, type Ctx } from './respond.js';

/**
 * The ModelScope `/api/v1` protocol as modelscope_hub 0.5.x uses it for snapshot downloads:
 * model info, revisions, `repo/files` listing (with Sha256) and `repo?FilePath=` downloads.
 */
export class MsApi {
  constructor(
    private readonly repos: Map<string, Repo>,
    private readonly cdn: Cdn,
  ) {}

  handle(ctx: Ctx, segs: string[]): boolean {
    if (segs[0] !== 'api' || segs[1] !== 'v1' || segs[2] !== 'models' || segs.length < 5) return false;
    const method = ctx.req.method;
    const rest = segs.slice(5);
    const id = `${segs[3]}/${segs[4]}`;
    const isDownload = rest.length === 1 && rest[0] === 'repo' && (method === 'GET' || method === 'HEAD');
    if (!isDownload && method !== 'GET') return false;
    if (isDownload) ctx.entry.path = ctx.url.searchParams.get('FilePath') ?? undefined;
    const known = rest.length === 0 || (rest.length === 1 && (rest[0] === 'revisions' || rest[0] === 'repo')) || (rest.length === 2 && rest[0] === 'repo' && rest[1] === 'files');
    if (!known) return false;
    const repo = this.repo(ctx, id);
    if (!repo) return true;
    if (rest.length === 0) this.info(ctx, repo);
    else if (rest[0] === 'revisions') this.revisions(ctx, repo);
    else if (rest[1] === 'files') this.files(ctx, repo);
    else this.download(ctx, repo);
    return true;
  }

  private repo(ctx: Ctx, id: string): Repo | undefined {
    const repo = this.repos.get(id);
    if (!repo || !repo.ms) {
      fail(ctx, 404, 10010205, `Model ${id} does not exist`);
      return undefined;
    }
    if (repo.gatedToken !== undefined && !authorised(ctx, repo.gatedToken)) {
      fail(ctx, 403, 10010403, `Permission denied: no access to model ${id}`);
      return undefined;
    }
    return repo;
  }

  private revision(ctx: Ctx, repo: Repo): Revision | undefined {
    const rev = ctx.url.searchParams.get('Revision') || 'master';
    const r = resolveRevision(repo, 'ms', rev);
    if (!r) fail(ctx, 404, 10010205, `The model: ${repo.id} has no revision: ${rev}`);
    return r;
  }

  private info(ctx: Ctx, repo: Repo): void {
    const main = repo.byCommit.get(repo.defaultCommit)!;
    ok(ctx, {
      Id: Number.parseInt(sha1(repo.id).slice(0, 8), 16),
      Name: repo.name,
      Path: repo.org,
      ChineseName: '',
      Description: '',
      CreatedTime: main.createdAt,
      LastUpdatedTime: main.createdAt,
      Revision: 'master',
      Visibility: 5,
      IsGated: repo.gatedToken !== undefined,
      Downloads: 0,
      Tasks: [],
    });
  }

  private revisions(ctx: Ctx, repo: Repo): void {
    const entry = (name: string, r: Revision) => ({ Revision: name, CreatedAt: r.createdAt, CommitId: r.commit, Message: '' });
    ok(ctx, {
      RevisionMap: {
        Branches: [...repo.msBranches].map(([n, r]) => entry(n, r)),
        Tags: [...repo.tags].map(([n, r]) => entry(n, r)),
      },
    });
  }

  private files(ctx: Ctx, repo: Repo): void {
    const r = this.revision(ctx, repo);
    if (!r) return;
    const q = ctx.url.searchParams;
    const recursive = (q.get('Recursive') ?? 'false').toLowerCase() === 'true';
    const root = (q.get('Root') ?? '').replace(/^\/+|\/+$/g, '');
    const prefix = root ? `${root}/` : '';
    if (root && !r.dirs.includes(root)) {
      fail(ctx, 404, 10010205, `Path ${root} does not exist in ${repo.id}`);
      return;
    }
    const inScope = (p: string): boolean => p.startsWith(prefix) && (recursive || !p.slice(prefix.length).includes('/'));
    const out: Array<Record<string, unknown>> = [];
    for (const d of r.dirs) {
      if (!inScope(d)) continue;
      out.push(fileRow(d, 'tree', 0, '', false, r, sha1(`tree\0${r.commit}\0${d}`), '040000'));
    }
    for (const p of r.paths) {
      if (!inScope(p)) continue;
      const f = r.files.get(p)!;
      out.push(fileRow(p, 'blob', f.size, f.sha256, f.lfs, r, f.listedOid, '100644'));
    }
    out.sort((a, b) => (String(a.Path) < String(b.Path) ? -1 : 1));
    if (!root) for (const x of repo.extraListing) out.push(fileRow(x.path, 'blob', x.size ?? 0, sha1(x.path).padEnd(64, '0'), false, r, sha1(x.path), '100644'));
    ok(ctx, { Files: out, IsVisual: 0 });
  }

  private download(ctx: Ctx, repo: Repo): void {
    const r = this.revision(ctx, repo);
    if (!r) return;
    const path = ctx.url.searchParams.get('FilePath') ?? '';
    const f = r.files.get(path);
    if (!f) {
      fail(ctx, 404, 10010205, `File ${path} does not exist in ${repo.id} at ${r.commit}`);
      return;
    }
    if (f.lfs) {
      sendEmpty(ctx, 302, { location: this.cdn.signedUrl(repo.id, f), 'content-length': 0 }, path);
      return;
    }
    const name = path.split('/').pop()!;
    sendFile(ctx, f, {
      'content-type': 'application/octet-stream',
      etag: `"${f.sha256}"`,
      'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(name)}`,
    });
  }
}

function fileRow(path: string, type: 'blob' | 'tree', size: number, sha256: string, lfs: boolean, r: Revision, id: string, mode: string): Record<string, unknown> {
  return {
    Id: id,
    Name: path.split('/').pop(),
    Path: path,
    Type: type,
    Size: size,
    Sha256: sha256,
    IsLFS: lfs,
    Mode: mode,
    Revision: r.commit,
    CommitId: r.commit,
    CommitMessage: 'fake hub commit',
    CommitterName: 'fakehub',
    CommittedDate: r.createdAt,
  };
}

/** modelscope_hub sends both a Bearer header and the m_session_id cookie; older clients only the cookie. */
function authorised(ctx: Ctx, token: string): boolean {
  if (ctx.req.headers.authorization === `Bearer ${token}`) return true;
  const cookie = ctx.req.headers.cookie ?? '';
  return cookie.split(';').some((c) => c.trim() === `m_session_id=${token}`);
}

function ok(ctx: Ctx, data: unknown): void {
  sendJson(ctx, 200, { Code: 200, Success: true, Message: 'success', RequestId: randomUUID(), Data: data });
}

function fail(ctx: Ctx, status: number, code: number, message: string): void {
  if (ctx.req.method === 'HEAD') {
    sendEmpty(ctx, status, {});
    return;
  }
  sendJson(ctx, status, { Code: code, Success: false, Message: message, RequestId: randomUUID(), Data: null });
}
