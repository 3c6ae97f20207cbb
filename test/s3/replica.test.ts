/**
 * A bucket as a private replica of the hubs (fake hub + real MinIO): `push --replica` writes
 * PREFIX/<hub>/<ORG>/<NAME>/<commit>/, and `pull --replica` takes every file the bucket has from it,
 * still verified against the hub's hashes, and only what it lacks (or holds wrong) from the hub.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';
import { skipWithoutMinio, startMinio, type Minio } from '../support/minio.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 97 + seed) & 0xff;
  return b;
}

const FILES: Record<string, Buffer> = {
  'config.json': Buffer.from('{"model_type":"demo"}'),
  'tokenizer.json': Buffer.from('{"tok":1}'),
  'model-00001-of-00002.safetensors': pattern(5 * 1024 * 1024 + 1, 3),
  'model-00002-of-00002.safetensors': pattern(2 * 1024 * 1024 + 9, 4),
};
const TOTAL = Object.values(FILES).reduce((n, b) => n + b.length, 0);

let hub: FakeHub;
let minio: Minio;
let repo: AddedRepo;

function env(extra: Record<string, string | undefined> = {}) {
  return minio.env({ HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: undefined, HF_HOME: '/nonexistent-hf-home', MODELSCOPE_API_TOKEN: undefined, ...extra });
}

async function store() {
  const dir = await tmpDir();
  return { dir, args: ['--store', join(dir, 'store'), '--state-dir', join(dir, 'state')] };
}

/** Requests for file bytes (resolve / repo?FilePath= and CDN), not listings. */
const fileRequests = () => hub.log.filter((e) => e.host === 'cdn' || /\/resolve\/|\/repo\?/.test(e.url));

async function pullJson(ref: string, s: { args: string[] }, extra: string[] = [], e = env()) {
  const r = await runCli(['pull', ref, ...s.args, '--json', ...extra], { env: e });
  const events = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; source?: string; path?: string; bytesDownloaded?: number });
  return { ...r, events, done: events.at(-1) };
}

async function verifyTree(dir: string) {
  for (const [p, body] of Object.entries(FILES)) expect(sha(await fsp.readFile(join(dir, p)))).toBe(sha(body));
}

describe.skipIf(skipWithoutMinio())('bucket replicas of the hubs', () => {
  beforeAll(async () => {
    [hub, minio] = await Promise.all([startFakeHub(), startMinio()]);
    repo = await hub.addRepo({ id: 'demo/replicated', files: FILES });
    await minio.createBucket('mirror');
    // One team pulls from the hub and pushes into the replica, for both hubs.
    const s = await store();
    for (const h of ['hf', 'ms']) {
      const p = await runCli(['pull', `${h}://demo/replicated`, ...s.args, '-q'], { env: env() });
      expect(p.code, p.stderr).toBe(0);
      const r = await runCli(['push', `${h}://demo/replicated`, '--replica', 's3://mirror/hubs', ...s.args, '-q'], { env: env() });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe(`s3://mirror/hubs/${h}/demo/replicated/${repo.commit}`);
    }
  }, 120_000);
  afterAll(async () => {
    await Promise.all([hub?.close(), minio?.stop()]);
  });

  it.each(['hf', 'ms'])('a %s:// pull is served by the replica: zero file bytes from the hub', async (h) => {
    const s = await store();
    hub.resetStats();
    const r = await pullJson(`${h}://demo/replicated`, s, ['--replica', 's3://mirror/hubs']);
    expect(r.code, r.stderr).toBe(0);
    expect(fileRequests()).toEqual([]);
    expect(hub.bytesSent({ host: 'cdn' })).toBe(0);
    // Only the listing went to the hub.
    expect(hub.log.length).toBeGreaterThan(0);
    expect(r.done).toMatchObject({ type: 'done', bytesDownloaded: TOTAL });
    expect(r.events.filter((e) => e.type === 'progress' && e.source === 'replica').length).toBeGreaterThan(0);
    await verifyTree(r.done!.path!);
  });

  it('falls back to the hub for a file the bucket lacks, and for a copy that does not match the hub', async () => {
    const base = `hubs/hf/demo/replicated/${repo.commit}`;
    const saved = (await minio.client.getText('mirror', `${base}/tokenizer.json`))!.text;
    const good = FILES['model-00002-of-00002.safetensors']!;
    try {
      await minio.client.delete('mirror', `${base}/tokenizer.json`);
      // A corrupt copy of the same size: it is fetched, fails the hub's SHA-256, and comes from the hub.
      const bad = Buffer.from(good);
      bad[1000]! ^= 0x55;
      await minio.client.put('mirror', `${base}/model-00002-of-00002.safetensors`, bad, bad.length);

      const s = await store();
      hub.resetStats();
      const r = await pullJson('hf://demo/replicated', s, ['--replica', 's3://mirror/hubs']);
      expect(r.code, r.stderr).toBe(0);
      await verifyTree(r.done!.path!);
      const fromHub = new Set(fileRequests().map((e) => e.path));
      expect([...fromHub].sort()).toEqual(['model-00002-of-00002.safetensors', 'tokenizer.json']);
      // The big shard came whole from the bucket; the hub sent the small file and one copy of the bad one.
      expect(hub.bytesSent({ path: 'model-00001-of-00002.safetensors' })).toBe(0);
      expect(hub.bytesSent({ path: 'model-00002-of-00002.safetensors' })).toBeLessThanOrEqual(good.length + 64 * 1024);
    } finally {
      await minio.client.put('mirror', `${base}/tokenizer.json`, Buffer.from(saved), Buffer.byteLength(saved));
      await minio.client.put('mirror', `${base}/model-00002-of-00002.safetensors`, good, good.length);
    }
  });

  it('a replica that cannot be read (no bucket, refused credentials) costs a warning, never the pull', async () => {
    for (const [replica, e] of [
      ['s3://no-such-bucket/hubs', env()],
      ['s3://mirror/hubs', env({ AWS_SECRET_ACCESS_KEY: 'wrong-wrong-wrong' })],
    ] as const) {
      const s = await store();
      const r = await pullJson('hf://demo/replicated', s, ['--replica', replica], e);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/replica unusable/);
      expect(r.stderr).not.toContain('wrong-wrong-wrong');
      await verifyTree(r.done!.path!);
    }
  });

  it('a commit the replica never got comes from the hub', async () => {
    const other = await hub.addRepo({ id: 'demo/not-mirrored', files: { 'config.json': '{}' } });
    const s = await store();
    hub.resetStats();
    const r = await pullJson('hf://demo/not-mirrored', s, ['--replica', 's3://mirror/hubs']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.done).toMatchObject({ bytesDownloaded: 2 });
    expect(fileRequests().length).toBeGreaterThan(0);
    expect(other.commit).toMatch(/^[0-9a-f]{40}$/);
  });
});
