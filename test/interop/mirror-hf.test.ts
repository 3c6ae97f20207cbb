/**
 * The real huggingface_hub (snapshot_download, hf_hub_download, `hf download`) and transformers
 * with HF_ENDPOINT at a daemon's mirror, the fake hub upstream: byte-identical files, one origin
 * copy for many clients, Range resume, gated repos, the hub going down, corruption upstream.
 */
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DEMO_REPO, demoFiles } from '../fakehub/demo.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { startMirrorNode, type MirrorNode } from '../mirror/harness.js';
import { pythonBin, pythonEnv, requirePython, run, runPython, skipWithoutPython, tmpDir } from '../support/index.js';
import { endpointsCalled, expectNoCredentialsAtCdn, expectSameFiles, noise, sampleFiles } from './fixtures.js';

const SNAPSHOT = `
import json, sys
from huggingface_hub import snapshot_download
rev = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
print(json.dumps({"path": snapshot_download(sys.argv[1], revision=rev)}))
`;
const pathOf = (stdout: string) => (JSON.parse(stdout.trim().split('\n').pop()!) as { path: string }).path;

const FILES = sampleFiles();
const BIG = { 'config.json': Buffer.from('{"model_type": "llama"}'), 'model-00001.safetensors': noise(6 * 1024 * 1024, 'big-1'), 'model-00002.safetensors': noise(5 * 1024 * 1024 + 17, 'big-2') };
const TOKEN = 'hf_gated_client_token';
const size = (files: Record<string, Buffer>) => Object.values(files).reduce((n, b) => n + b.length, 0);

describe.skipIf(skipWithoutPython())('huggingface_hub and transformers through the mirror', () => {
  let hub: FakeHub;
  let node: MirrorNode;
  let pub: AddedRepo;

  beforeAll(async () => {
    requirePython();
    hub = await startFakeHub({ treePageSize: 1000 });
    pub = await hub.addRepo({ id: 'acme/public-model', files: FILES, branches: { 'feature/x': { 'config.json': '{"branch": 1}' } }, tags: { 'v1.0': 'feature/x' } });
    await hub.addRepo({ id: 'acme/big', files: BIG });
    await hub.addRepo({ id: 'acme/gated', files: { 'config.json': '{"gated": true}', 'model.safetensors': noise(200_000, 'gated') }, gated: { token: TOKEN } });
    await hub.addRepo({ id: DEMO_REPO, files: demoFiles() });
    // The daemon has a token of its own that the hub accepts for the gated repo: it must never serve a client.
    node = await startMirrorNode(hub, { env: { HF_TOKEN: TOKEN }, deps: { mirror: { treePageSize: 3, accessTtlMs: 60_000 } } });
  });
  afterAll(async () => {
    await node?.stop();
    await hub?.close();
  });
  beforeEach(() => {
    hub.resetStats();
    hub.clearFaults();
    hub.perConnectionRate = undefined;
  });

  async function env(extra: Record<string, string | undefined> = {}): Promise<Record<string, string | undefined>> {
    const home = await tmpDir('sf-mhf-');
    return pythonEnv({ HOME: home, HF_HOME: join(home, 'hf'), HF_ENDPOINT: node.hfEndpoint, ...extra });
  }

  it('snapshot_download (paginated tree), then warm, then a slash branch and a tag: byte-identical, each file from the origin once', async () => {
    const cold = await runPython(SNAPSHOT, ['acme/public-model'], { env: await env() });
    expect(cold.code, cold.stderr).toBe(0);
    expect(pathOf(cold.stdout).endsWith(pub.commit)).toBe(true);
    await expectSameFiles(pathOf(cold.stdout), FILES);
    for (const [p, b] of Object.entries(FILES)) expect(hub.bytesSent({ path: p }), p).toBe(b.length);
    // The client followed the mirror's own Link pagination (page size 3 for 7 files + 3 folders).
    expect(endpointsCalled(hub).filter((c) => c.includes('/tree/'))).toHaveLength(1);

    hub.resetStats();
    const warm = await runPython(SNAPSHOT, ['acme/public-model'], { env: await env() });
    expect(warm.code, warm.stderr).toBe(0);
    await expectSameFiles(pathOf(warm.stdout), FILES);
    expect(hub.bytesSent({ host: 'cdn' })).toBe(0);
    for (const p of Object.keys(FILES)) expect(hub.bytesSent({ path: p }), p).toBe(0);

    for (const rev of ['feature/x', 'v1.0']) {
      const r = await runPython(SNAPSHOT, ['acme/public-model', rev], { env: await env() });
      expect(r.code, r.stderr).toBe(0);
      expect(pathOf(r.stdout).endsWith(pub.branchCommits['feature/x']!)).toBe(true);
      await expectSameFiles(pathOf(r.stdout), { 'config.json': Buffer.from('{"branch": 1}') });
    }
  });

  it('hf download (CLI) and transformers AutoConfig / AutoTokenizer', async () => {
    const e = await env();
    const cli = await run(join(dirname(pythonBin()), 'hf'), ['download', DEMO_REPO], { env: e });
    expect(cli.code, cli.stderr).toBe(0);
    const snap = /path:\s*(\S+)/.exec(cli.stdout)?.[1] ?? cli.stdout.trim().split('\n').pop()!;
    await expectSameFiles(snap, demoFiles());
    const load = await runPython(
      'import json, sys\nfrom transformers import AutoConfig, AutoTokenizer\nc = AutoConfig.from_pretrained(sys.argv[1])\nt = AutoTokenizer.from_pretrained(sys.argv[1])\nprint(json.dumps({"type": c.model_type, "ids": t("hello world")["input_ids"]}))',
      [DEMO_REPO],
      { env: await env() },
    );
    expect(load.code, load.stderr).toBe(0);
    const out = JSON.parse(load.stdout.trim().split('\n').pop()!) as { type: string; ids: number[] };
    expect(out.type).toBe('gpt2');
    expect(out.ids).toHaveLength(2);
  });

  it('4 concurrent cold clients cost the origin one copy, and all get the right bytes', async () => {
    hub.perConnectionRate = 4 * 1024 * 1024;
    const runs = await Promise.all([1, 2, 3, 4].map(async () => runPython(SNAPSHOT, ['acme/big'], { env: await env() })));
    for (const r of runs) {
      expect(r.code, r.stderr).toBe(0);
      await expectSameFiles(pathOf(r.stdout), BIG);
    }
    const origin = hub.bytesSent({ path: 'model-00001.safetensors' }) + hub.bytesSent({ path: 'model-00002.safetensors' }) + hub.bytesSent({ path: 'config.json' });
    expect(origin).toBeGreaterThanOrEqual(size(BIG));
    expect(origin).toBeLessThanOrEqual(1.05 * size(BIG));
    const metrics = await (await fetch(`${node.daemon.url}/metrics`)).text();
    expect(metrics).toMatch(/swift_fetch_mirror_misses_total\{hub="hf"\} [1-9]/);
  });

  it('a client resuming with Range gets the right bytes, while the file downloads and from the store', async () => {
    const big = noise(9 * 1024 * 1024 + 5, 'resume');
    const added = await hub.addRepo({ id: 'acme/resume', files: { 'model.safetensors': big } });
    hub.perConnectionRate = 3 * 1024 * 1024;
    const url = `${node.hfEndpoint}/acme/resume/resolve/${added.commit}/model.safetensors`;
    const RESUME = `
import io, sys
from huggingface_hub.file_download import http_get
f = io.BytesIO()
http_get(sys.argv[1], f, resume_size=int(sys.argv[2]), expected_size=int(sys.argv[3]))
open(sys.argv[4], "wb").write(f.getvalue())
`;
    const out = join(await tmpDir('sf-range-'), 'part');
    for (const start of [5 * 1024 * 1024 + 3, 1234]) {
      const r = await runPython(RESUME, [url, String(start), String(big.length), out], { env: await env() });
      expect(r.code, r.stderr).toBe(0);
      expect((await readFile(out)).equals(big.subarray(start))).toBe(true);
    }
    const tail = await fetch(url, { headers: { range: 'bytes=-10' } });
    expect(tail.status).toBe(206);
    expect(tail.headers.get('content-range')).toBe(`bytes ${big.length - 10}-${big.length - 1}/${big.length}`);
    expect(Buffer.from(await tail.arrayBuffer()).equals(big.subarray(big.length - 10))).toBe(true);
    const past = await fetch(url, { headers: { range: `bytes=${big.length}-` } });
    expect(past.status).toBe(416);
    expect(past.headers.get('content-range')).toBe(`bytes */${big.length}`);
    expect(hub.bytesSent({ path: 'model.safetensors' })).toBeLessThanOrEqual(big.length * 1.05);
  });

  it('gated: the hub decides with the client token, even when the node holds the model; the daemon token serves nobody', async () => {
    const ok = await runPython(SNAPSHOT, ['acme/gated'], { env: await env({ HF_TOKEN: TOKEN }) });
    expect(ok.code, ok.stderr).toBe(0);
    expect((await readFile(join(pathOf(ok.stdout), 'config.json'), 'utf8'))).toBe('{"gated": true}');
    expectNoCredentialsAtCdn(hub);
    // Every hub request the mirror made for the gated repo carried the client's token.
    for (const e of hub.log.filter((x) => x.host === 'hub' && x.url.includes('gated'))) expect(e.headers.authorization).toBe(`Bearer ${TOKEN}`);

    hub.resetStats();
    const none = await runPython(SNAPSHOT, ['acme/gated'], { env: await env() });
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain('GatedRepoError');
    expect(none.stderr).toMatch(/401/);
    const wrong = await runPython(SNAPSHOT, ['acme/gated'], { env: await env({ HF_TOKEN: 'hf_wrong' }) });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toContain('GatedRepoError');
    expect(wrong.stderr).toMatch(/403/);
    // Asked upstream with exactly what each client sent: nothing, then the wrong token.
    const auths = hub.log.filter((x) => x.host === 'hub').map((x) => x.headers.authorization ?? 'none');
    expect(auths).toEqual(expect.arrayContaining(['none', 'Bearer hf_wrong']));
    expect(auths).not.toContain(`Bearer ${TOKEN}`);
    // A direct file request without a token gets the hub's answer too, not the stored bytes.
    const direct = await fetch(`${node.hfEndpoint}/acme/gated/resolve/main/config.json`);
    expect(direct.status).toBe(401);
    expect(direct.headers.get('x-error-code')).toBe('GatedRepo');
  });

  it('a client with a 3 s read timeout gets a cold file that takes ~6 s to come from the origin, without a retry', async () => {
    const slow = await startMirrorNode(hub, { yaml: 'mirror: true\nconnections: 2\n' });
    try {
      const weights = noise(12 * 1024 * 1024, 'slow');
      await hub.addRepo({ id: 'acme/slow', files: { 'model.safetensors': weights } });
      hub.perConnectionRate = 1024 * 1024;
      const t0 = Date.now();
      const r = await runPython(SNAPSHOT, ['acme/slow'], { env: await env({ HF_ENDPOINT: slow.hfEndpoint, HF_HUB_DOWNLOAD_TIMEOUT: '3' }) });
      expect(r.code, r.stderr).toBe(0);
      expect(Date.now() - t0).toBeGreaterThan(4000);
      // huggingface_hub logs every read timeout it recovers from; there must be none.
      expect(r.stderr).not.toMatch(/Trying to resume download|timed out/i);
      expect((await readFile(join(pathOf(r.stdout), 'model.safetensors'))).equals(weights)).toBe(true);
    } finally {
      await slow.stop();
    }
  });

  it('a corrupt upstream never completes a wrong file for the client; once it heals the client gets the right bytes', async () => {
    const weights = noise(2 * 1024 * 1024 + 99, 'corrupt');
    await hub.addRepo({ id: 'acme/corrupt', files: { 'config.json': '{}', 'model.safetensors': weights } });
    hub.fault({ kind: 'corrupt', host: 'cdn', path: 'model.safetensors', offset: 1_000_000, times: Infinity });
    const e = await env();
    const bad = await runPython(SNAPSHOT, ['acme/corrupt'], { env: e });
    expect(bad.code).not.toBe(0);
    // Whatever the client kept, no complete copy of the file holds wrong bytes.
    const blobs = join(e.HF_HOME!, 'hub', 'models--acme--corrupt', 'blobs');
    for (const name of existsSync(blobs) ? await readdir(blobs) : []) {
      const b = await readFile(join(blobs, name));
      if (b.length === weights.length) expect(b.equals(weights)).toBe(true);
    }
    hub.clearFaults();
    const good = await runPython(SNAPSHOT, ['acme/corrupt'], { env: await env() });
    expect(good.code, good.stderr).toBe(0);
    expect((await readFile(join(pathOf(good.stdout), 'model.safetensors'))).equals(weights)).toBe(true);
  });
});
