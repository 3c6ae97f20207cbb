/**
 * The mirror inside a real daemon, spoken to over HTTP directly (no Python): streaming while the
 * engine downloads, following the daemon's own pulls, the endpoints answer, allow-lists, metrics.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { noise } from '../interop/fixtures.js';
import { until } from '../daemon/helpers.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { startMirrorNode, type MirrorNode } from './harness.js';

let hub: FakeHub;
const nodes: MirrorNode[] = [];
const big = noise(12 * 1024 * 1024 + 7, 'stream');
let repo: AddedRepo;

beforeAll(async () => {
  hub = await startFakeHub();
  repo = await hub.addRepo({ id: 'acme/stream', files: { 'config.json': '{}', 'model.safetensors': big } });
});
afterAll(() => hub.close());
afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  hub.perConnectionRate = undefined;
  hub.resetStats();
});

async function node(yaml = 'mirror: true\n', deps = {}): Promise<MirrorNode> {
  const n = await startMirrorNode(hub, { yaml, deps });
  nodes.push(n);
  return n;
}

async function metric(n: MirrorNode, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${n.daemon.url}/metrics`)).text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(',');
  const line = text.split('\n').find((l) => l.startsWith(want ? `${name}{${want}} ` : `${name} `));
  return line ? Number(line.split(' ').pop()) : NaN;
}

/** GET a URL and read the body, noting (from the request's start) when the first and last bytes arrived. */
async function timedGet(url: string): Promise<{ status: number; body: Buffer; firstAt: number; endAt: number }> {
  const t0 = performance.now();
  const res = await fetch(url);
  const parts: Buffer[] = [];
  let firstAt = -1;
  for await (const piece of res.body as unknown as AsyncIterable<Uint8Array>) {
    if (firstAt < 0) firstAt = performance.now() - t0;
    parts.push(Buffer.from(piece));
  }
  return { status: res.status, body: Buffer.concat(parts), firstAt, endAt: performance.now() - t0 };
}

describe('mirror in the daemon', () => {
  it('GET /v1/mirror answers absolute endpoints built from the address the client used', async () => {
    const n = await node();
    // fetch() will not send a Host header of our choosing; node:http will.
    const body = await new Promise<string>((resolve, reject) => {
      const req = request(`${n.daemon.url}/v1/mirror`, { headers: { host: 'gpu-node-7.cluster.local:7070' } }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (b: Buffer) => parts.push(b));
        res.on('end', () => resolve(Buffer.concat(parts).toString()));
      });
      req.on('error', reject);
      req.end();
    });
    expect(JSON.parse(body)).toEqual({ hfEndpoint: 'http://gpu-node-7.cluster.local:7070/hf', modelscopeEndpoint: 'http://gpu-node-7.cluster.local:7070/ms' });
    expect(n.hfEndpoint).toBe(`${n.daemon.url}/hf`);
  });

  it('is off without `mirror` in the config', async () => {
    const n = await node('');
    expect((await fetch(`${n.daemon.url}/v1/mirror`)).status).toBe(404);
    expect((await fetch(`${n.daemon.url}/hf/api/models/acme/stream`)).status).toBe(404);
    expect(hub.log).toHaveLength(0);
  });

  it('streams a cold file while it downloads (first bytes long before the last), then serves it from the store', async () => {
    // Two connections at 1 MiB/s each: the whole file takes ~6 s at the origin.
    const n = await node('mirror: true\nconnections: 2\n');
    hub.perConnectionRate = 1024 * 1024;
    const url = `${n.hfEndpoint}/acme/stream/resolve/main/model.safetensors`;
    const head = await fetch(url, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('x-repo-commit')).toBe(repo.commit);
    expect(head.headers.get('x-linked-etag')).toBe(`"${repo.files.find((f) => f.path === 'model.safetensors')!.sha256}"`);
    expect(head.headers.get('x-linked-size')).toBe(String(big.length));
    expect(head.headers.get('content-length')).toBe(String(big.length));
    expect(hub.bytesSent({ path: 'model.safetensors' })).toBe(0);
    const waiting = until(async () => (await metric(n, 'swift_fetch_mirror_clients_waiting')) > 0, 20, 30_000);
    const { status, body, firstAt, endAt } = await timedGet(url);
    await waiting;
    expect(status).toBe(200);
    expect(body.equals(big)).toBe(true);
    expect(endAt).toBeGreaterThan(4000);
    expect(firstAt).toBeLessThan(endAt / 3);
    expect(hub.bytesSent({ path: 'model.safetensors' })).toBe(big.length);
    expect(await metric(n, 'swift_fetch_mirror_misses_total', { hub: 'hf' })).toBe(1);
    expect(await metric(n, 'swift_fetch_mirror_bytes_served_total', { hub: 'hf' })).toBe(big.length);
    // Now a hit, at disk speed, costing the origin nothing.
    hub.resetStats();
    const again = Buffer.from(await (await fetch(url)).arrayBuffer());
    expect(again.equals(big)).toBe(true);
    expect(hub.bytesSent()).toBe(0);
    expect(await metric(n, 'swift_fetch_mirror_hits_total', { hub: 'hf' })).toBe(1);
    expect(await metric(n, 'swift_fetch_mirror_requests_total', { hub: 'hf', route: 'resolve' })).toBe(3);
  });

  it('a client asking for a file the daemon is pulling itself follows that pull: one origin copy', async () => {
    hub.perConnectionRate = 2 * 1024 * 1024;
    const n = await node('mirror: true\nconnections: 2\nmodels: [hf://acme/stream]\n');
    // The pull holds the blob's lease and its engine is writing the file.
    await until(() => (n.daemon.reconciler.get('hf://acme/stream@main')?.bytesDone ?? 0) > 1024 * 1024, 20);
    const { body, firstAt, endAt } = await timedGet(`${n.hfEndpoint}/acme/stream/resolve/main/model.safetensors`);
    expect(body.equals(big)).toBe(true);
    // Streamed from the pull's partial file as it grew, not handed over once the pull was done.
    expect(firstAt).toBeLessThan(endAt / 2);
    await until(() => n.daemon.reconciler.get('hf://acme/stream@main')?.state === 'ready', 50);
    expect(hub.bytesSent({ path: 'model.safetensors' })).toBeLessThanOrEqual(big.length * 1.05);
  });

  it('publishes what it fetched: a partial revision under its commit only, refs once it is complete', async () => {
    const files = { 'config.json': '{"p": 1}', 'tokenizer.json': '{"t": 1}', 'w.safetensors': noise(300_000, 'publish') };
    const added = await hub.addRepo({ id: 'acme/publish', files });
    const n = await node();
    const key = { hub: 'hf' as const, org: 'acme', name: 'publish' };
    const refFile = join(n.dir, 'store', 'huggingface', 'hub', 'models--acme--publish', 'refs', 'main');
    expect(await (await fetch(`${n.hfEndpoint}/acme/publish/resolve/main/config.json`)).text()).toBe('{"p": 1}');
    const partial = await until(async () => n.daemon.store.readRecord(key, added.commit), 50);
    expect(partial.complete).toBe(false);
    expect(partial.files.map((f) => f.path)).toEqual(['config.json']);
    expect(existsSync(refFile)).toBe(false);
    for (const p of ['tokenizer.json', 'w.safetensors']) await (await fetch(`${n.hfEndpoint}/acme/publish/resolve/main/${p}`)).arrayBuffer();
    const full = await until(async () => ((await n.daemon.store.readRecord(key, added.commit))?.complete ? n.daemon.store.readRecord(key, added.commit) : undefined), 50);
    expect(full!.files.map((f) => f.path)).toEqual(['config.json', 'tokenizer.json', 'w.safetensors']);
    expect(await readFile(refFile, 'utf8')).toBe(added.commit);
    expect((await readFile(join(full!.paths.hf!, 'w.safetensors'))).equals(files['w.safetensors'])).toBe(true);
  });

  it('serves only the repos `allow` names; others never reach the hub', async () => {
    const n = await node('mirror: {allow: ["hf://other/*"]}\n');
    const res = await fetch(`${n.hfEndpoint}/api/models/acme/stream/revision/main`);
    expect(res.status).toBe(403);
    expect(res.headers.get('x-error-message')).toMatch(/not mirrored/);
    const ms = await fetch(`${n.msEndpoint}/api/v1/models/acme/stream/repo/files?Revision=master`);
    expect(ms.status).toBe(403);
    expect(hub.log.filter((e) => e.url.includes('acme/stream'))).toHaveLength(0);
  });

  it('a file that failed verification: the client that got its bytes is reset; Range requests then get the whole file', async () => {
    const weights = noise(3 * 1024 * 1024, 'distrust');
    await hub.addRepo({ id: 'acme/flaky', files: { 'model.safetensors': weights } });
    const n = await node();
    hub.perConnectionRate = 2 * 1024 * 1024;
    hub.fault({ kind: 'corrupt', host: 'cdn', path: 'model.safetensors', offset: 10, times: 1 });
    const url = `${n.hfEndpoint}/acme/flaky/resolve/main/model.safetensors`;
    const first = await timedGet(url).catch((e: Error) => e);
    // Reset after the bad bytes went out; never a complete body.
    expect(first instanceof Error || !first.body.equals(weights)).toBe(true);
    if (!(first instanceof Error)) expect(first.body.length).toBeLessThan(weights.length);
    const resumed = await fetch(url, { headers: { range: 'bytes=1000-' } });
    expect(resumed.status).toBe(200);
    expect(Buffer.from(await resumed.arrayBuffer()).equals(weights)).toBe(true);
  });

  it('refuses a hostile listing from the hub instead of serving it', async () => {
    await hub.addRepo({ id: 'acme/hostile', files: { 'config.json': '{}' }, extraListing: [{ path: '../../etc/passwd', size: 3 }] });
    const n = await node();
    const tree = await fetch(`${n.hfEndpoint}/api/models/acme/hostile/tree/main?recursive=true`);
    expect(tree.status).toBe(502);
    expect(tree.headers.get('x-error-message')).toMatch(/unsafe path/);
    const file = await fetch(`${n.msEndpoint}/api/v1/models/acme/hostile/repo?Revision=master&FilePath=config.json`);
    expect(file.status).toBe(502);
    expect(existsSync(join(n.dir, 'store', 'models', 'hf', 'acme'))).toBe(false);
  });

  it('rejects names no hub allows, and unknown repos get the hub\'s own answer', async () => {
    const n = await node();
    expect((await fetch(`${n.hfEndpoint}/..%2F..%2Fetc/passwd/resolve/main/x`)).status).toBe(404);
    const missing = await fetch(`${n.hfEndpoint}/api/models/acme/missing/revision/main`);
    expect(missing.status).toBe(401); // what the hub tells anonymous callers
    expect(missing.headers.get('x-error-code')).toBe('RepoNotFound');
    const entry = await fetch(`${n.hfEndpoint}/acme/stream/resolve/main/nope.json`, { method: 'HEAD' });
    expect(entry.status).toBe(404);
    expect(entry.headers.get('x-error-code')).toBe('EntryNotFound');
    expect(entry.headers.get('x-repo-commit')).toBe(repo.commit);
  });
});
