import { dirname, join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { pythonBin, pythonEnv, requirePython, run, runPython, skipWithoutPython, tmpDir } from '../support/index.js';
import { cdnRequests, endpointsCalled, expectNoCredentialsAtCdn, expectSameFiles, noise, sampleFiles } from './fixtures.js';

const SNAPSHOT = `
import json, sys
from huggingface_hub import snapshot_download
rev = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
print(json.dumps({"path": snapshot_download(sys.argv[1], revision=rev)}))
`;

const FILES = sampleFiles();
const BRANCH_FILES = { 'config.json': Buffer.from('{"branch": "feature/x"}'), 'model.safetensors': FILES['model.safetensors']!.subarray(0, 50_000) };
const TOKEN = 'hf_fake_token_for_gated_repo';

describe.skipIf(skipWithoutPython())('real huggingface_hub against the fake hub', () => {
  let hub: FakeHub;
  let pub: AddedRepo;
  let gated: AddedRepo;

  beforeAll(async () => {
    requirePython();
    // A small page size makes the client follow Link pagination.
    hub = await startFakeHub({ treePageSize: 4 });
    pub = await hub.addRepo({ id: 'acme/public-model', files: FILES, branches: { 'feature/x': BRANCH_FILES } });
    gated = await hub.addRepo({ id: 'acme/gated-model', files: FILES, gated: { token: TOKEN } });
  });
  afterAll(async () => {
    await hub?.close();
  });
  beforeEach(() => hub.resetStats());

  async function env(extra: Record<string, string | undefined> = {}): Promise<Record<string, string | undefined>> {
    const home = await tmpDir('sf-hf-');
    return pythonEnv({ HOME: home, HF_HOME: join(home, 'hf'), HF_ENDPOINT: hub.hfEndpoint, ...extra });
  }

  it('snapshot_download fetches a public repo with LFS and nested regular files', async () => {
    const e = await env();
    const res = await runPython(SNAPSHOT, ['acme/public-model'], { env: e });
    expect(res.code, res.stderr).toBe(0);
    const { path } = JSON.parse(res.stdout.trim().split('\n').pop()!) as { path: string };
    expect(path).toBe(join(e.HF_HOME!, 'hub', 'models--acme--public-model', 'snapshots', pub.commit));
    await expectSameFiles(path, FILES);
    const calls = endpointsCalled(hub);
    expect(calls).toContain('GET /api/models/acme/public-model/revision/main');
    expect(calls.filter((c) => c === `GET /api/models/acme/public-model/tree/${pub.commit}`).length).toBeGreaterThan(1);
    expect(calls).toContain(`HEAD /acme/public-model/resolve/${pub.commit}/tokenizer/nested/merges.txt`);
    // Every LFS file came from the CDN host, every regular one from the hub.
    const lfs = pub.files.filter((f) => f.lfs).map((f) => f.path).sort();
    expect(cdnRequests(hub).map((r) => r.path).sort()).toEqual(lfs);
    expect(lfs).toEqual(['data/large-text.txt', 'model.safetensors', 'shards/part-00001.bin']);
    expectNoCredentialsAtCdn(hub);
  });

  it('snapshot_download of a branch with a slash in its name', async () => {
    const res = await runPython(SNAPSHOT, ['acme/public-model', 'feature/x'], { env: await env() });
    expect(res.code, res.stderr).toBe(0);
    const { path } = JSON.parse(res.stdout.trim().split('\n').pop()!) as { path: string };
    expect(path.endsWith(pub.branchCommits['feature/x']!)).toBe(true);
    await expectSameFiles(path, BRANCH_FILES);
    expect(endpointsCalled(hub)).toContain('GET /api/models/acme/public-model/revision/feature%2Fx');
  });

  it('hf download (CLI) fetches the repo into the cache', async () => {
    const e = await env();
    const hf = join(dirname(pythonBin()), 'hf');
    const res = await run(hf, ['download', 'acme/public-model'], { env: e });
    expect(res.code, res.stderr).toBe(0);
    const snapshot = join(e.HF_HOME!, 'hub', 'models--acme--public-model', 'snapshots', pub.commit);
    expect(res.stdout).toContain(snapshot);
    await expectSameFiles(snapshot, FILES);
    expectNoCredentialsAtCdn(hub);
  });

  it('a gated repo downloads with HF_TOKEN, and the token never reaches the CDN', async () => {
    const res = await runPython(SNAPSHOT, ['acme/gated-model'], { env: await env({ HF_TOKEN: TOKEN }) });
    expect(res.code, res.stderr).toBe(0);
    const { path } = JSON.parse(res.stdout.trim().split('\n').pop()!) as { path: string };
    expect(path.endsWith(gated.commit)).toBe(true);
    await expectSameFiles(path, FILES);
    const hubCalls = hub.log.filter((e) => e.host === 'hub' && e.url.includes('gated-model'));
    expect(hubCalls.length).toBeGreaterThan(0);
    for (const c of hubCalls) expect(c.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(cdnRequests(hub).length).toBe(3);
    expectNoCredentialsAtCdn(hub);
  });

  it('a gated repo without a token, or with a wrong one, fails with GatedRepoError', async () => {
    const none = await runPython(SNAPSHOT, ['acme/gated-model'], { env: await env() });
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain('GatedRepoError');
    const wrong = await runPython(SNAPSHOT, ['acme/gated-model'], { env: await env({ HF_TOKEN: 'hf_wrong' }) });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toContain('GatedRepoError');
    expect(cdnRequests(hub)).toHaveLength(0);
  });

  it('resumes with Range after a mid-body reset on the CDN and ends with the right bytes', async () => {
    // huggingface_hub reads 10 MB chunks and only resumes from whole chunks it has received, so the
    // cut has to come after the first 10 MB for the retry to carry a Range header.
    const big = noise(12 * 1024 * 1024, 'resume');
    await hub.addRepo({ id: 'acme/resume', files: { 'model.safetensors': big } });
    hub.fault({ kind: 'reset', host: 'cdn', path: 'model.safetensors', afterBytes: 11 * 1024 * 1024 });
    try {
      const res = await runPython(SNAPSHOT, ['acme/resume'], { env: await env() });
      expect(res.code, res.stderr).toBe(0);
      const { path } = JSON.parse(res.stdout.trim().split('\n').pop()!) as { path: string };
      await expectSameFiles(path, { 'model.safetensors': big });
      const gets = cdnRequests(hub).filter((r) => r.path === 'model.safetensors');
      expect(gets).toHaveLength(2);
      expect(gets[0]!.fault).toBe('reset');
      const resumeAt = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? '')?.[1]);
      expect(resumeAt).toBeGreaterThan(0);
      expect(resumeAt).toBeLessThanOrEqual(11 * 1024 * 1024);
      expect(gets[1]!.status).toBe(206);
    } finally {
      hub.clearFaults();
    }
  });

  it('a TCP reset (rst: true) reaches the Python client as ConnectionResetError', async () => {
    const added = await hub.addRepo({ id: 'acme/rst', files: { 'model.safetensors': noise(200_000, 'rst') } });
    const head = await fetch(`${hub.hfEndpoint}/acme/rst/resolve/${added.commit}/model.safetensors`, { method: 'HEAD', redirect: 'manual' });
    hub.fault({ kind: 'reset', host: 'cdn', afterBytes: 1000, rst: true });
    const code = `
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1]).read()
    print("complete")
except ConnectionResetError:
    print("ConnectionResetError")
except Exception as e:
    print(type(e).__name__)
`;
    const res = await runPython(code, [head.headers.get('location')!], { env: await env() });
    expect(res.stdout.trim()).toBe('ConnectionResetError');
  });

  it('unknown repos and revisions raise the matching client errors', async () => {
    const repo = await runPython(SNAPSHOT, ['acme/missing'], { env: await env() });
    expect(repo.code).not.toBe(0);
    expect(repo.stderr).toContain('RepositoryNotFoundError');
    const rev = await runPython(SNAPSHOT, ['acme/public-model', 'no-such-branch'], { env: await env() });
    expect(rev.code).not.toBe(0);
    expect(rev.stderr).toContain('RevisionNotFoundError');
  });
});
