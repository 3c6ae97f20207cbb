import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeHub, type AddedRepo, type FakeHub } from './index.js';

// Independent re-implementations of the hashes, so the fake's own helpers are not trusted.
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const gitOid = (b: Buffer): string => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

const BIG = randomBytes(3 * 1024 * 1024 + 17);
const SMALL_BIN = Buffer.from('tiny weights');
const FILES: Record<string, Buffer> = {
  'config.json': Buffer.from('{"model_type":"gpt2"}\n'),
  'model.safetensors': BIG,
  'sub/dir/tokenizer.json': Buffer.from('{"version":"1.0"}'),
  'sub/weights.bin': SMALL_BIN,
  'sub/readme.txt': Buffer.from('hello from a subfolder\n'),
};

async function bytes(res: Response): Promise<Buffer> {
  return Buffer.from(await res.arrayBuffer());
}

/** Follows `Link: rel="next"` until the listing ends. */
async function treeAll(url: string): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = [];
  let next: string | undefined = url;
  while (next) {
    const res = await fetch(next);
    expect(res.status).toBe(200);
    out.push(...((await res.json()) as Array<Record<string, unknown>>));
    const link = res.headers.get('link');
    next = link ? /<([^>]+)>;\s*rel="next"/.exec(link)![1] : undefined;
  }
  return out;
}

describe('fake hub protocol', () => {
  let hub: FakeHub;
  let repo: AddedRepo;
  let gated: AddedRepo;

  beforeAll(async () => {
    hub = await startFakeHub({ treePageSize: 3 });
    repo = await hub.addRepo({
      id: 'org/model',
      files: FILES,
      branches: { 'feature/x': { 'config.json': '{"branch":true}', 'extra.txt': 'only on the branch' } },
      tags: { 'v1.0': 'feature/x' },
    });
    gated = await hub.addRepo({ id: 'org/gated', files: { 'config.json': '{}', 'model.safetensors': BIG.subarray(0, 4096) }, gated: { token: 'hf_secret' } });
  });
  afterAll(async () => {
    await hub.close();
  });
  beforeEach(() => {
    hub.clearFaults();
    hub.resetStats();
    hub.signedUrlTtlMs = 3_600_000;
  });

  it('serves the hub and the CDN on different hosts', () => {
    expect(new URL(hub.hfEndpoint).hostname).toBe('127.0.0.1');
    expect(new URL(hub.cdnOrigin).hostname).toBe('127.0.0.2');
    expect(hub.msEndpoint).toBe(hub.hfEndpoint);
  });

  it('describes added repos with hashes the hub lists', () => {
    expect(repo.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(repo.branchCommits.main).toBe(repo.commit);
    expect(repo.branchCommits.master).toBe(repo.commit);
    expect(repo.branchCommits['feature/x']).toMatch(/^[0-9a-f]{40}$/);
    expect(repo.branchCommits['feature/x']).not.toBe(repo.commit);
    expect(repo.branchCommits['v1.0']).toBe(repo.branchCommits['feature/x']);
    const byPath = new Map(repo.files.map((f) => [f.path, f]));
    expect([...byPath.keys()].sort()).toEqual(Object.keys(FILES).sort());
    for (const [p, content] of Object.entries(FILES)) {
      const f = byPath.get(p)!;
      expect(f.size).toBe(content.length);
      expect(f.sha256).toBe(sha256(content));
    }
    expect(byPath.get('config.json')!.lfs).toBe(false);
    expect(byPath.get('config.json')!.gitOid).toBe(gitOid(FILES['config.json']!));
    expect(byPath.get('model.safetensors')!.lfs).toBe(true);
    expect(byPath.get('sub/weights.bin')!.lfs).toBe(true); // *.bin is always LFS, however small
  });

  it('gives the same commit for the same files (deterministic)', async () => {
    const other = await startFakeHub();
    try {
      const again = await other.addRepo({ id: 'org/model', files: FILES });
      expect(again.commit).toBe(repo.commit);
    } finally {
      await other.close();
    }
  });

  describe('Hugging Face', () => {
    it('answers revision info with the commit', async () => {
      const res = await fetch(`${hub.hfEndpoint}/api/models/org/model/revision/main`);
      expect(res.status).toBe(200);
      const body = (await res.json()) as { id: string; sha: string; siblings: Array<{ rfilename: string }>; gated: unknown; private: boolean };
      expect(body.id).toBe('org/model');
      expect(body.sha).toBe(repo.commit);
      expect(body.private).toBe(false);
      expect(body.gated).toBe(false);
      expect(body.siblings.map((s) => s.rfilename).sort()).toEqual(Object.keys(FILES).sort());
    });

    it('adds sizes, blob ids and LFS info to siblings with blobs=true', async () => {
      const res = await fetch(`${hub.hfEndpoint}/api/models/org/model/revision/main?blobs=true`);
      const body = (await res.json()) as { siblings: Array<{ rfilename: string; size: number; blobId: string; lfs?: { sha256: string; size: number; pointerSize: number } }> };
      const big = body.siblings.find((s) => s.rfilename === 'model.safetensors')!;
      expect(big.size).toBe(BIG.length);
      expect(big.lfs).toEqual({ sha256: sha256(BIG), size: BIG.length, pointerSize: expect.any(Number) });
      const cfg = body.siblings.find((s) => s.rfilename === 'config.json')!;
      expect(cfg.blobId).toBe(gitOid(FILES['config.json']!));
      expect(cfg.lfs).toBeUndefined();
    });

    it('resolves branches with %2F, tags and commit ids; unknown revisions are RevisionNotFound', async () => {
      const branch = await fetch(`${hub.hfEndpoint}/api/models/org/model/revision/feature%2Fx`);
      expect(((await branch.json()) as { sha: string }).sha).toBe(repo.branchCommits['feature/x']);
      const tag = await fetch(`${hub.hfEndpoint}/api/models/org/model/revision/v1.0`);
      expect(((await tag.json()) as { sha: string }).sha).toBe(repo.branchCommits['feature/x']);
      const commit = await fetch(`${hub.hfEndpoint}/api/models/org/model/revision/${repo.commit}`);
      expect(((await commit.json()) as { sha: string }).sha).toBe(repo.commit);
      // ModelScope's default branch does not exist on the HF side.
      const nope = await fetch(`${hub.hfEndpoint}/api/models/org/model/revision/master`);
      expect(nope.status).toBe(404);
      expect(nope.headers.get('x-error-code')).toBe('RevisionNotFound');
      expect(nope.headers.get('x-error-message')).toBeTruthy();
    });

    it('answers unknown repos like the real Hub: 401 anonymous, 404 authenticated', async () => {
      const anon = await fetch(`${hub.hfEndpoint}/api/models/org/missing/revision/main`);
      expect(anon.status).toBe(401);
      expect(anon.headers.get('x-error-code')).toBe('RepoNotFound');
      const authed = await fetch(`${hub.hfEndpoint}/api/models/org/missing/revision/main`, { headers: { authorization: 'Bearer x' } });
      expect(authed.status).toBe(404);
      expect(authed.headers.get('x-error-code')).toBe('RepoNotFound');
    });

    it('paginates the recursive tree with Link headers and never sends xetHash', async () => {
      const entries: Array<Record<string, unknown>> = [];
      let url: string | undefined = `${hub.hfEndpoint}/api/models/org/model/tree/${repo.commit}?recursive=true&expand=false`;
      let pages = 0;
      while (url) {
        const res = await fetch(url);
        expect(res.status).toBe(200);
        const page = (await res.json()) as Array<Record<string, unknown>>;
        expect(page.length).toBeLessThanOrEqual(3);
        entries.push(...page);
        pages++;
        const link = res.headers.get('link');
        url = link ? /<([^>]+)>;\s*rel="next"/.exec(link)![1] : undefined;
      }
      expect(pages).toBe(3); // 5 files + 2 directories, 3 per page
      const files = entries.filter((e) => e.type === 'file');
      const dirs = entries.filter((e) => e.type === 'directory').map((e) => e.path);
      expect(dirs.sort()).toEqual(['sub', 'sub/dir']);
      expect(files.map((f) => f.path).sort()).toEqual(Object.keys(FILES).sort());
      for (const e of entries) expect(e).not.toHaveProperty('xetHash');
      const big = files.find((f) => f.path === 'model.safetensors')!;
      expect(big.size).toBe(BIG.length);
      expect(big.lfs).toEqual({ oid: sha256(BIG), size: BIG.length, pointerSize: expect.any(Number) });
      const readme = files.find((f) => f.path === 'sub/readme.txt')!;
      expect(readme.oid).toBe(gitOid(FILES['sub/readme.txt']!));
      expect(readme).not.toHaveProperty('lfs');
    });

    it('accepts recursive=1 and lists one level without recursion', async () => {
      const all = await treeAll(`${hub.hfEndpoint}/api/models/org/model/tree/main?recursive=1`);
      expect(all.length).toBe(7);
      const topEntries = await treeAll(`${hub.hfEndpoint}/api/models/org/model/tree/main`);
      expect(topEntries.map((e) => e.path).sort()).toEqual(['config.json', 'model.safetensors', 'sub']);
      const sub = await treeAll(`${hub.hfEndpoint}/api/models/org/model/tree/main/sub`);
      expect(sub.map((e) => e.path).sort()).toEqual(['sub/dir', 'sub/readme.txt', 'sub/weights.bin']);
    });

    it('HEAD resolve of a regular file: 200 with ETag = git blob id, size and commit', async () => {
      const res = await fetch(`${hub.hfEndpoint}/org/model/resolve/main/sub/readme.txt`, { method: 'HEAD', redirect: 'manual' });
      expect(res.status).toBe(200);
      expect(res.headers.get('etag')).toBe(`"${gitOid(FILES['sub/readme.txt']!)}"`);
      expect(res.headers.get('content-length')).toBe(String(FILES['sub/readme.txt']!.length));
      expect(res.headers.get('x-repo-commit')).toBe(repo.commit);
      expect(res.headers.get('accept-ranges')).toBe('bytes');
      const get = await fetch(`${hub.hfEndpoint}/org/model/resolve/main/sub/readme.txt`);
      expect(await bytes(get)).toEqual(FILES['sub/readme.txt']);
    });

    it('resolve of an LFS file: 302 to a signed URL on the CDN host with linked headers', async () => {
      const res = await fetch(`${hub.hfEndpoint}/org/model/resolve/main/model.safetensors`, { method: 'HEAD', redirect: 'manual' });
      expect(res.status).toBe(302);
      const loc = new URL(res.headers.get('location')!);
      expect(loc.origin).toBe(hub.cdnOrigin);
      expect(loc.searchParams.get('sig')).toMatch(/^[0-9a-f]{64}$/);
      expect(Number(loc.searchParams.get('expires'))).toBeGreaterThan(Date.now());
      expect(res.headers.get('x-linked-etag')).toBe(`"${sha256(BIG)}"`);
      expect(res.headers.get('x-linked-size')).toBe(String(BIG.length));
      expect(res.headers.get('x-repo-commit')).toBe(repo.commit);
      expect(res.headers.get('etag')).toBeTruthy();
      const blob = await fetch(loc);
      expect(blob.status).toBe(200);
      expect(blob.headers.get('accept-ranges')).toBe('bytes');
      expect(blob.headers.get('etag')).toBeTruthy();
      expect(sha256(await bytes(blob))).toBe(sha256(BIG));
      // GET on the hub redirects too.
      const get = await fetch(`${hub.hfEndpoint}/org/model/resolve/${repo.commit}/model.safetensors`, { redirect: 'manual' });
      expect(get.status).toBe(302);
    });

    it('missing entries are EntryNotFound with X-Repo-Commit', async () => {
      for (const method of ['HEAD', 'GET']) {
        const res = await fetch(`${hub.hfEndpoint}/org/model/resolve/main/nope.txt`, { method, redirect: 'manual' });
        expect(res.status).toBe(404);
        expect(res.headers.get('x-error-code')).toBe('EntryNotFound');
        expect(res.headers.get('x-repo-commit')).toBe(repo.commit);
      }
    });

    it('serves other branches with their own files', async () => {
      const res = await fetch(`${hub.hfEndpoint}/org/model/resolve/feature%2Fx/extra.txt`);
      expect(res.status).toBe(200);
      expect(res.headers.get('x-repo-commit')).toBe(repo.branchCommits['feature/x']);
      expect(await res.text()).toBe('only on the branch');
      const missing = await fetch(`${hub.hfEndpoint}/org/model/resolve/main/extra.txt`, { method: 'HEAD' });
      expect(missing.status).toBe(404);
    });

    it('gates repos: 401 without token, 403 with a wrong one, 200 with the right one', async () => {
      const url = `${hub.hfEndpoint}/org/gated/resolve/main/config.json`;
      const none = await fetch(url, { method: 'HEAD' });
      expect(none.status).toBe(401);
      expect(none.headers.get('x-error-code')).toBe('GatedRepo');
      const wrong = await fetch(url, { method: 'HEAD', headers: { authorization: 'Bearer nope' } });
      expect(wrong.status).toBe(403);
      expect(wrong.headers.get('x-error-code')).toBe('GatedRepo');
      const info = await fetch(`${hub.hfEndpoint}/api/models/org/gated/revision/main`, { headers: { authorization: 'Bearer hf_secret' } });
      expect(info.status).toBe(200);
      const body = (await info.json()) as { sha: string; gated: unknown };
      expect(body.sha).toBe(gated.commit);
      expect(body.gated).toBe('manual');
      const ok = await fetch(url, { headers: { authorization: 'Bearer hf_secret' } });
      expect(ok.status).toBe(200);
      expect(await ok.text()).toBe('{}');
    });
  });

  describe('Range', () => {
    async function cdnUrl(path: string): Promise<string> {
      const res = await fetch(`${hub.hfEndpoint}/org/model/resolve/main/${path}`, { method: 'HEAD', redirect: 'manual' });
      return res.headers.get('location')!;
    }

    it('answers bytes=a-b, a- and -n with 206 and Content-Range on the CDN and the hub', async () => {
      const size = BIG.length;
      const cases: Array<[string, number, number]> = [
        ['bytes=0-0', 0, 0],
        ['bytes=100-1099', 100, 1099],
        ['bytes=1000-', 1000, size - 1],
        ['bytes=-500', size - 500, size - 1],
        ['bytes=5-999999999', 5, size - 1],
      ];
      const url = await cdnUrl('model.safetensors');
      for (const [range, start, end] of cases) {
        const res = await fetch(url, { headers: { range } });
        expect(res.status, range).toBe(206);
        expect(res.headers.get('content-range')).toBe(`bytes ${start}-${end}/${size}`);
        expect(res.headers.get('content-length')).toBe(String(end - start + 1));
        expect((await bytes(res)).equals(BIG.subarray(start, end + 1))).toBe(true);
      }
      const text = FILES['sub/readme.txt']!;
      const hubRes = await fetch(`${hub.hfEndpoint}/org/model/resolve/main/sub/readme.txt`, { headers: { range: 'bytes=6-9' } });
      expect(hubRes.status).toBe(206);
      expect(hubRes.headers.get('content-range')).toBe(`bytes 6-9/${text.length}`);
      expect(await bytes(hubRes)).toEqual(text.subarray(6, 10));
    });

    it('answers unsatisfiable ranges with 416 and bytes */size', async () => {
      const url = await cdnUrl('model.safetensors');
      for (const range of [`bytes=${BIG.length}-`, `bytes=${BIG.length + 10}-${BIG.length + 20}`, 'bytes=-0']) {
        const res = await fetch(url, { headers: { range } });
        expect(res.status, range).toBe(416);
        expect(res.headers.get('content-range')).toBe(`bytes */${BIG.length}`);
        await res.arrayBuffer();
      }
    });
  });

  describe('CDN signatures', () => {
    it('rejects a tampered signature and an expired URL with S3-like XML', async () => {
      const head = await fetch(`${hub.hfEndpoint}/org/model/resolve/main/model.safetensors`, { method: 'HEAD', redirect: 'manual' });
      const url = new URL(head.headers.get('location')!);
      url.searchParams.set('path', 'other.bin');
      const tampered = await fetch(url);
      expect(tampered.status).toBe(403);
      expect(await tampered.text()).toContain('<Code>AccessDenied</Code>');

      hub.signedUrlTtlMs = 0;
      const head2 = await fetch(`${hub.hfEndpoint}/org/model/resolve/main/model.safetensors`, { method: 'HEAD', redirect: 'manual' });
      const expired = await fetch(head2.headers.get('location')!);
      expect(expired.status).toBe(403);
      const xml = await expired.text();
      expect(xml).toContain('<Code>AccessDenied</Code>');
      expect(xml).toContain('<Message>Request has expired</Message>');
    });
  });

  describe('ModelScope', () => {
    const api = (): string => `${hub.msEndpoint}/api/v1/models/org/model`;

    it('answers model info and revisions', async () => {
      const info = (await (await fetch(api())).json()) as { Code: number; Success: boolean; Data: { Name: string; Path: string } };
      expect(info.Code).toBe(200);
      expect(info.Success).toBe(true);
      expect(info.Data.Name).toBe('model');
      expect(info.Data.Path).toBe('org');
      const revs = (await (await fetch(`${api()}/revisions`)).json()) as {
        Data: { RevisionMap: { Branches: Array<{ Revision: string; CommitId: string; CreatedAt: number }>; Tags: Array<{ Revision: string; CommitId: string }> } };
      };
      const branches = Object.fromEntries(revs.Data.RevisionMap.Branches.map((b) => [b.Revision, b.CommitId]));
      expect(branches).toEqual({ master: repo.commit, 'feature/x': repo.branchCommits['feature/x'] });
      expect(revs.Data.RevisionMap.Tags).toEqual([expect.objectContaining({ Revision: 'v1.0', CommitId: repo.branchCommits['feature/x'] })]);
    });

    it('lists files recursively with Sha256 on every blob', async () => {
      const res = await fetch(`${api()}/repo/files?Revision=master&Recursive=True`);
      const body = (await res.json()) as { Code: number; Data: { Files: Array<{ Name: string; Path: string; Type: string; Size: number; Sha256: string; IsLFS: boolean; Revision: string }> } };
      expect(body.Code).toBe(200);
      const blobs = body.Data.Files.filter((f) => f.Type === 'blob');
      const trees = body.Data.Files.filter((f) => f.Type === 'tree');
      expect(trees.map((t) => t.Path).sort()).toEqual(['sub', 'sub/dir']);
      expect(blobs.map((b) => b.Path).sort()).toEqual(Object.keys(FILES).sort());
      for (const b of blobs) {
        expect(b.Sha256).toBe(sha256(FILES[b.Path]!));
        expect(b.Size).toBe(FILES[b.Path]!.length);
        expect(b.Revision).toBe(repo.commit);
        expect(b.Name).toBe(b.Path.split('/').pop());
      }
      expect(blobs.find((b) => b.Path === 'model.safetensors')!.IsLFS).toBe(true);
      const shallow = (await (await fetch(`${api()}/repo/files?Revision=master&Recursive=False&Root=sub`)).json()) as { Data: { Files: Array<{ Path: string }> } };
      expect(shallow.Data.Files.map((f) => f.Path).sort()).toEqual(['sub/dir', 'sub/readme.txt', 'sub/weights.bin']);
    });

    it('downloads small files directly (with Range) and redirects LFS files to the CDN', async () => {
      const small = await fetch(`${api()}/repo?Revision=master&FilePath=${encodeURIComponent('sub/readme.txt')}`);
      expect(small.status).toBe(200);
      expect(small.headers.get('etag')).toBeTruthy();
      expect(small.headers.get('accept-ranges')).toBe('bytes');
      expect(await bytes(small)).toEqual(FILES['sub/readme.txt']);
      const ranged = await fetch(`${api()}/repo?Revision=master&FilePath=config.json`, { headers: { range: 'bytes=2-' } });
      expect(ranged.status).toBe(206);
      expect(await bytes(ranged)).toEqual(FILES['config.json']!.subarray(2));
      const big = await fetch(`${api()}/repo?Revision=${repo.commit}&FilePath=model.safetensors`, { redirect: 'manual' });
      expect(big.status).toBe(302);
      expect(new URL(big.headers.get('location')!).origin).toBe(hub.cdnOrigin);
      expect(sha256(await bytes(await fetch(big.headers.get('location')!)))).toBe(sha256(BIG));
    });

    it('answers missing models, revisions and files with 404 and a JSON error', async () => {
      const model = await fetch(`${hub.msEndpoint}/api/v1/models/org/missing/repo/files?Revision=master&Recursive=True`);
      expect(model.status).toBe(404);
      expect(((await model.json()) as { Success: boolean }).Success).toBe(false);
      const rev = await fetch(`${api()}/repo/files?Revision=nope&Recursive=True`);
      expect(rev.status).toBe(404);
      const body = (await rev.json()) as { Code: number; Success: boolean; Message: string };
      expect(body.Success).toBe(false);
      expect(body.Code).not.toBe(200);
      expect(body.Message).toContain('has no revision');
      // HF's default branch name is not a ModelScope branch.
      expect((await fetch(`${api()}/repo/files?Revision=main&Recursive=True`)).status).toBe(404);
      const file = await fetch(`${api()}/repo?Revision=master&FilePath=nope.txt`);
      expect(file.status).toBe(404);
    });

    it('gates with 403 and accepts the token as Bearer or m_session_id cookie', async () => {
      const url = `${hub.msEndpoint}/api/v1/models/org/gated/repo/files?Revision=master&Recursive=True`;
      expect((await fetch(url)).status).toBe(403);
      expect((await fetch(url, { headers: { authorization: 'Bearer wrong' } })).status).toBe(403);
      expect((await fetch(url, { headers: { authorization: 'Bearer hf_secret' } })).status).toBe(200);
      expect((await fetch(url, { headers: { cookie: 'a=b; m_session_id=hf_secret' } })).status).toBe(200);
    });
  });

  describe('hostile listings', () => {
    it('injects extraListing entries verbatim into both hubs listings', async () => {
      const hostile = ['../escape.txt', '/etc/passwd', 'a\u0000b', 'ok/../../x'];
      await hub.addRepo({ id: 'evil/repo', files: { 'fine.txt': 'fine' }, extraListing: hostile.map((path) => ({ path, size: 3 })) });
      const tree = await treeAll(`${hub.hfEndpoint}/api/models/evil/repo/tree/main?recursive=true`);
      expect(tree.map((e) => e.path)).toEqual(['fine.txt', ...hostile]);
      const info = (await (await fetch(`${hub.hfEndpoint}/api/models/evil/repo/revision/main`)).json()) as { siblings: Array<{ rfilename: string }> };
      expect(info.siblings.map((s) => s.rfilename)).toEqual(['fine.txt', ...hostile]);
      const ms = (await (await fetch(`${hub.msEndpoint}/api/v1/models/evil/repo/repo/files?Revision=master&Recursive=True`)).json()) as { Data: { Files: Array<{ Path: string }> } };
      expect(ms.Data.Files.map((f) => f.Path)).toEqual(['fine.txt', ...hostile]);
    });
  });

  describe('hub selection', () => {
    it('serves an hf-only repo only over the HF protocol', async () => {
      await hub.addRepo({ id: 'only/hf', hub: 'hf', files: { 'a.txt': 'a' } });
      expect((await fetch(`${hub.hfEndpoint}/api/models/only/hf/revision/main`)).status).toBe(200);
      expect((await fetch(`${hub.msEndpoint}/api/v1/models/only/hf/repo/files?Revision=master&Recursive=True`)).status).toBe(404);
    });
  });
});
