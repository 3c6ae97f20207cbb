/**
 * The real modelscope client (snapshot_download, model_file_download) with MODELSCOPE_ENDPOINT at
 * a daemon's mirror; identical content across hubs fetched once; and both hubs' clients served
 * from the store while the hub is down.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { startMirrorNode, type MirrorNode } from '../mirror/harness.js';
import { until } from '../daemon/helpers.js';
import { pythonEnv, requirePython, runPython, skipWithoutPython, tmpDir } from '../support/index.js';
import { expectNoCredentialsAtCdn, expectSameFiles, noise, sampleFiles } from './fixtures.js';

const MS_SNAPSHOT = `
import json, sys
from modelscope import snapshot_download
rev = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
print(json.dumps({"path": snapshot_download(sys.argv[1], revision=rev)}))
`;
const HF_SNAPSHOT = `
import json, sys
from huggingface_hub import snapshot_download, HfApi
p = snapshot_download(sys.argv[1])
print(json.dumps({"path": p, "sha": HfApi().model_info(sys.argv[1]).sha}))
`;
const pathOf = (stdout: string) => (JSON.parse(stdout.trim().split('\n').pop()!) as { path: string }).path;
const FILES = sampleFiles();
const TOKEN = 'ms-gated-client-token';

async function env(node: MirrorNode, extra: Record<string, string | undefined> = {}): Promise<Record<string, string | undefined>> {
  const home = await tmpDir('sf-mms-');
  return pythonEnv({ HOME: home, HF_HOME: join(home, 'hf'), MODELSCOPE_CACHE: join(home, 'ms'), HF_ENDPOINT: node.hfEndpoint, MODELSCOPE_ENDPOINT: node.msEndpoint, ...extra });
}

describe.skipIf(skipWithoutPython())('modelscope through the mirror', () => {
  let hub: FakeHub;
  let node: MirrorNode;
  let pub: AddedRepo;

  beforeAll(async () => {
    requirePython();
    hub = await startFakeHub();
    pub = await hub.addRepo({ id: 'acme/public-model', files: FILES, branches: { 'v2-dev': { 'config.json': '{"v": 2}' } }, tags: { 'v1.0': 'master' } });
    await hub.addRepo({ id: 'acme/gated', files: { 'config.json': '{"gated": "ms"}', 'model.safetensors': noise(150_000, 'msg') }, gated: { token: TOKEN } });
    node = await startMirrorNode(hub, { env: { MODELSCOPE_API_TOKEN: TOKEN } });
  });
  afterAll(async () => {
    await node?.stop();
    await hub?.close();
  });
  afterEach(() => {
    hub.resetStats();
    hub.clearFaults();
  });

  it('snapshot_download and model_file_download: byte-identical, from the origin once, tags and branches', async () => {
    const cold = await runPython(MS_SNAPSHOT, ['acme/public-model'], { env: await env(node) });
    expect(cold.code, cold.stderr).toBe(0);
    await expectSameFiles(pathOf(cold.stdout), FILES);
    for (const [p, b] of Object.entries(FILES)) expect(hub.bytesSent({ path: p }), p).toBe(b.length);
    hub.resetStats();
    const warm = await runPython(MS_SNAPSHOT, ['acme/public-model', 'v1.0'], { env: await env(node) });
    expect(warm.code, warm.stderr).toBe(0);
    await expectSameFiles(pathOf(warm.stdout), FILES);
    expect(hub.bytesSent({ host: 'cdn' })).toBe(0);
    const one = await runPython('import sys\nfrom modelscope.hub.file_download import model_file_download\nprint(model_file_download(sys.argv[1], "tokenizer/nested/merges.txt"))', ['acme/public-model'], {
      env: await env(node),
    });
    expect(one.code, one.stderr).toBe(0);
    expect((await readFile(one.stdout.trim().split('\n').pop()!)).equals(FILES['tokenizer/nested/merges.txt']!)).toBe(true);
    const branch = await runPython(MS_SNAPSHOT, ['acme/public-model', 'v2-dev'], { env: await env(node) });
    expect(branch.code, branch.stderr).toBe(0);
    await expectSameFiles(pathOf(branch.stdout), { 'config.json': Buffer.from('{"v": 2}') });
    expect(pub.branchCommits['v2-dev']).toBeDefined();
  });

  it('identical content is one download across hubs: the HF client after the ModelScope one costs the origin nothing', async () => {
    const weights = noise(3 * 1024 * 1024, 'both-hubs');
    const files = { 'config.json': Buffer.from('{"shared": true}'), 'model.safetensors': weights };
    await hub.addRepo({ id: 'acme/ms-side', files, hub: 'ms' });
    await hub.addRepo({ id: 'acme/hf-side', files, hub: 'hf' });
    const ms = await runPython(MS_SNAPSHOT, ['acme/ms-side'], { env: await env(node) });
    expect(ms.code, ms.stderr).toBe(0);
    hub.resetStats();
    const hf = await runPython(HF_SNAPSHOT, ['acme/hf-side'], { env: await env(node) });
    expect(hf.code, hf.stderr).toBe(0);
    await expectSameFiles(pathOf(hf.stdout), files);
    expect(hub.bytesSent({ path: 'model.safetensors' })).toBe(0);
    expect(hub.bytesSent({ path: 'config.json' })).toBe(0);
  });

  it('gated: refused without the client token even with the model on the node; served with it', async () => {
    const ok = await runPython(MS_SNAPSHOT, ['acme/gated'], { env: await env(node, { MODELSCOPE_API_TOKEN: TOKEN }) });
    expect(ok.code, ok.stderr).toBe(0);
    expect(await readFile(join(pathOf(ok.stdout), 'config.json'), 'utf8')).toBe('{"gated": "ms"}');
    expectNoCredentialsAtCdn(hub);
    const none = await runPython(MS_SNAPSHOT, ['acme/gated'], { env: await env(node) });
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/403|Permission/i);
    const direct = await fetch(`${node.msEndpoint}/api/v1/models/acme/gated/repo?Revision=master&FilePath=config.json`);
    expect(direct.status).toBe(403);
  });
});

describe.skipIf(skipWithoutPython())('the mirror while the hub is down', () => {
  let hub: FakeHub;
  let node: MirrorNode;
  let repo: AddedRepo;
  const mirrored = { 'config.json': Buffer.from('{"mirrored": true}'), 'model.safetensors': noise(1_200_000, 'mirrored') };
  const files = { 'config.json': Buffer.from('{"model_type": "gpt2"}'), 'model.safetensors': noise(1_500_000, 'down'), 'sub/extra.txt': Buffer.from('x\n') };

  beforeAll(async () => {
    requirePython();
    hub = await startFakeHub();
    repo = await hub.addRepo({ id: 'acme/pulled', files });
    // Declared models: pulled by the daemon itself, never read through the mirror before the outage.
    node = await startMirrorNode(hub, { yaml: 'mirror: true\nmodels: [hf://acme/pulled, ms://acme/pulled]\n', deps: { mirror: { classifyEveryMs: 200 } } });
    for (const key of ['hf://acme/pulled@main', 'ms://acme/pulled@master']) await until(() => node.daemon.reconciler.get(key)?.state === 'ready', 50);
    const known = join(node.dir, 'state', 'mirror', 'known.json');
    await until(async () => (await readFile(known, 'utf8').catch(() => '')).includes('"ms:acme/pulled":true') && (await readFile(known, 'utf8')).includes('"hf:acme/pulled":true'), 100);
    // And one model only ever fetched through the mirror: its record is what serves it later.
    const m = await hub.addRepo({ id: 'acme/mirrored', files: mirrored });
    const warm = await runPython(HF_SNAPSHOT, ['acme/mirrored'], { env: await env(node) });
    expect(warm.code, warm.stderr).toBe(0);
    await until(async () => (await node.daemon.store.readRecord({ hub: 'hf', org: 'acme', name: 'mirrored' }, m.commit))?.complete === true, 50);
    await hub.close();
  });
  afterAll(async () => {
    await node?.stop();
    await hub?.close();
  });

  it('HF: snapshot_download and model_info (the last resolved commit for main) come from the store', async () => {
    const r = await runPython(HF_SNAPSHOT, ['acme/pulled'], { env: await env(node) });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { path: string; sha: string };
    expect(out.sha).toBe(repo.commit);
    await expectSameFiles(out.path, files);
  });

  it('ModelScope: snapshot_download comes from the store', async () => {
    const r = await runPython(MS_SNAPSHOT, ['acme/pulled'], { env: await env(node) });
    expect(r.code, r.stderr).toBe(0);
    await expectSameFiles(pathOf(r.stdout), files);
  });

  it('a model only ever fetched through the mirror is served too', async () => {
    const r = await runPython(HF_SNAPSHOT, ['acme/mirrored'], { env: await env(node) });
    expect(r.code, r.stderr).toBe(0);
    await expectSameFiles(pathOf(r.stdout), mirrored);
  });

  it('a repo never seen here is refused with 503, not guessed', async () => {
    const res = await fetch(`${node.hfEndpoint}/api/models/acme/unknown/revision/main`);
    expect(res.status).toBe(503);
    expect(res.headers.get('x-error-message')).toMatch(/unreachable/);
  });
});
