import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { pythonEnv, requirePython, runPython, skipWithoutPython, tmpDir } from '../support/index.js';
import { cdnRequests, endpointsCalled, expectNoCredentialsAtCdn, expectSameFiles, sampleFiles } from './fixtures.js';

const SNAPSHOT = `
import json, sys
from modelscope import snapshot_download
rev = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
print(json.dumps({"path": snapshot_download(sys.argv[1], revision=rev)}))
`;

const FILES = sampleFiles();
const TOKEN = 'ms-fake-token';

describe.skipIf(skipWithoutPython())('real modelscope client against the fake hub', () => {
  let hub: FakeHub;
  let pub: AddedRepo;

  beforeAll(async () => {
    requirePython();
    hub = await startFakeHub();
    pub = await hub.addRepo({ id: 'acme/public-model', files: FILES, branches: { 'v2-dev': { 'config.json': '{"v": 2}' } }, tags: { 'v1.0': 'master' } });
    await hub.addRepo({ id: 'acme/gated-model', files: FILES, gated: { token: TOKEN } });
  });
  afterAll(async () => {
    await hub?.close();
  });
  beforeEach(() => {
    hub.resetStats();
    hub.clearFaults();
  });

  async function env(extra: Record<string, string | undefined> = {}): Promise<Record<string, string | undefined>> {
    const home = await tmpDir('sf-ms-');
    return pythonEnv({ HOME: home, MODELSCOPE_CACHE: join(home, 'modelscope'), MODELSCOPE_ENDPOINT: hub.msEndpoint, ...extra });
  }

  function pathOf(stdout: string): string {
    return (JSON.parse(stdout.trim().split('\n').pop()!) as { path: string }).path;
  }

  it('snapshot_download fetches a public repo with LFS and nested regular files', async () => {
    const e = await env();
    const res = await runPython(SNAPSHOT, ['acme/public-model'], { env: e });
    expect(res.code, res.stderr).toBe(0);
    const path = pathOf(res.stdout);
    expect(path.startsWith(e.MODELSCOPE_CACHE!)).toBe(true);
    await expectSameFiles(path, FILES);
    const calls = endpointsCalled(hub);
    expect(calls).toContain('GET /api/v1/models/acme/public-model/repo/files');
    expect(calls.filter((c) => c === 'GET /api/v1/models/acme/public-model/repo')).toHaveLength(Object.keys(FILES).length);
    const lfs = pub.files.filter((f) => f.lfs).map((f) => f.path).sort();
    expect(cdnRequests(hub).map((r) => r.path).sort()).toEqual(lfs);
    expectNoCredentialsAtCdn(hub);
  });

  it('snapshot_download of another branch and of a tag', async () => {
    const branch = await runPython(SNAPSHOT, ['acme/public-model', 'v2-dev'], { env: await env() });
    expect(branch.code, branch.stderr).toBe(0);
    await expectSameFiles(pathOf(branch.stdout), { 'config.json': Buffer.from('{"v": 2}') });
    const tag = await runPython(SNAPSHOT, ['acme/public-model', 'v1.0'], { env: await env() });
    expect(tag.code, tag.stderr).toBe(0);
    await expectSameFiles(pathOf(tag.stdout), FILES);
  });

  it('a gated repo downloads with MODELSCOPE_API_TOKEN, which never reaches the CDN', async () => {
    const res = await runPython(SNAPSHOT, ['acme/gated-model'], { env: await env({ MODELSCOPE_API_TOKEN: TOKEN }) });
    expect(res.code, res.stderr).toBe(0);
    await expectSameFiles(pathOf(res.stdout), FILES);
    const hubCalls = hub.log.filter((e) => e.host === 'hub' && e.url.includes('gated-model'));
    expect(hubCalls.length).toBeGreaterThan(0);
    for (const c of hubCalls) expect(c.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(cdnRequests(hub).length).toBe(3);
    expectNoCredentialsAtCdn(hub);
  });

  it('a gated repo without a token fails, and so do unknown repos and revisions', async () => {
    const none = await runPython(SNAPSHOT, ['acme/gated-model'], { env: await env() });
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/403|Permission/i);
    const missing = await runPython(SNAPSHOT, ['acme/missing'], { env: await env() });
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/404|not exist/i);
    const rev = await runPython(SNAPSHOT, ['acme/public-model', 'no-such-rev'], { env: await env() });
    expect(rev.code).not.toBe(0);
    expect(rev.stderr).toContain('has no revision');
    expect(cdnRequests(hub)).toHaveLength(0);
  });

  it('resumes with Range after a mid-body reset on the CDN and ends with the right bytes', async () => {
    hub.fault({ kind: 'reset', host: 'cdn', path: 'model.safetensors', afterBytes: 1_000_000 });
    const res = await runPython(SNAPSHOT, ['acme/public-model'], { env: await env() });
    expect(res.code, res.stderr).toBe(0);
    await expectSameFiles(pathOf(res.stdout), FILES);
    const big = cdnRequests(hub).filter((r) => r.path === 'model.safetensors');
    expect(big[0]!.fault).toBe('reset');
    expect(big.at(-1)!.range).toMatch(/^bytes=\d+-$/);
    expect(big.at(-1)!.status).toBe(206);
  });
});
