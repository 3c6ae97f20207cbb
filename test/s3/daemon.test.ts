/**
 * The daemon's `backup:` and `replicas:` against the fake hub and a real MinIO: one daemon pulls its
 * declared models from the hub and backs the wanted one up; a second daemon, on another store, with
 * that bucket as its replica, gets the model with zero file bytes from the hub.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/core/errors.js';
import { parseConfig } from '../../src/daemon/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { tmpDir } from '../support/index.js';
import { skipWithoutMinio, startMinio, type Minio } from '../support/minio.js';

const log = pino({ level: 'silent' });
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed * 13 + (i >> 9)) & 0xff;
  return b;
}

const WANTED = { 'config.json': Buffer.from('{"a":1}'), 'model.safetensors': pattern(3 * 1024 * 1024 + 3, 1) };
const OTHER = { 'config.json': Buffer.from('{"b":2}') };

async function until<T>(fn: () => Promise<T | undefined | false>, what: string, ms = 40_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('daemon config: backup and replicas', () => {
  it('reads them, and refuses what is not an s3 location or an unknown key', () => {
    const cfg = parseConfig(
      'models: [hf://a/b]\nreplicas: [s3://mirror/hubs, "s3://mirror2/x/"]\nbackup: {to: s3://bk1/backups, models: [hf://a/b]}\n',
      '/etc/sf/config.yaml',
      { env: {} },
    );
    expect(cfg.replicas).toEqual([
      { bucket: 'mirror', prefix: 'hubs' },
      { bucket: 'mirror2', prefix: 'x' },
    ]);
    expect(cfg.backup).toEqual({ to: { bucket: 'bk1', prefix: 'backups' }, models: ['hf://a/b@main'] });
    expect(parseConfig('models: []\n', 'c.yaml', { env: {} }).replicas).toBeUndefined();
    expect(parseConfig('models: []\n', 'c.yaml', { env: {} }).backup).toBeUndefined();
    const bad = (text: string) => {
      try {
        parseConfig(text, 'c.yaml', { env: {} });
      } catch (e) {
        expect(e).toBeInstanceOf(UsageError);
        return (e as Error).message;
      }
      throw new Error('accepted');
    };
    expect(bad('replicas: [gs://x/y]\n')).toMatch(/^c\.yaml: replicas\[0\]: invalid S3 location "gs:\/\/x\/y"/);
    expect(bad('backup: {to: s3://bk1/x, every: 1h}\n')).toMatch(/backup\.every: unknown key \(expected one of: to, models\)/);
    expect(bad('backup: {models: [hf://a/b]}\n')).toMatch(/backup\.to/);
  });
});

describe.skipIf(skipWithoutMinio())('daemon with a bucket', () => {
  let hub: FakeHub;
  let minio: Minio;
  let wanted: AddedRepo;
  const daemons: Daemon[] = [];
  beforeAll(async () => {
    [hub, minio] = await Promise.all([startFakeHub(), startMinio()]);
    wanted = await hub.addRepo({ id: 'org/wanted', files: WANTED });
    await hub.addRepo({ id: 'org/other', files: OTHER });
    await minio.createBucket('backups');
  }, 120_000);
  afterAll(async () => {
    for (const d of daemons) await d.stop();
    await Promise.all([hub?.close(), minio?.stop()]);
  });

  const env = () => minio.env({ HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: undefined, HF_HOME: '/nonexistent-hf-home' }) as NodeJS.ProcessEnv;

  async function daemon(yaml: string, dir: string): Promise<Daemon> {
    const cfg = parseConfig(`store: ${join(dir, 'store')}\nstateDir: ${join(dir, 'state')}\nlisten: 127.0.0.1:0\n${yaml}`, join(dir, 'config.yaml'), { env: env() });
    const d = await startDaemon(cfg, { env: env(), logger: log, resyncMs: 0, backup: { retryBaseMs: 200, retryMaxMs: 1000 } });
    daemons.push(d);
    return d;
  }

  it('backs up the declared model it was told to, once ready; a second daemon pulls it through the bucket as its replica', async () => {
    const a = await daemon('models: [hf://org/wanted, hf://org/other]\nbackup: {to: s3://backups/cluster-a, models: [hf://org/wanted]}\n', await tmpDir());
    const prefix = `cluster-a/hf/org/wanted/${wanted.commit}/`;
    const keys = await until(async () => {
      const ks = (await minio.client.list('backups', prefix)).map((o) => o.key);
      return ks.includes(`${prefix}.swift-fetch-manifest.json`) ? ks : undefined;
    }, 'the backup manifest');
    expect(keys.sort()).toEqual([`${prefix}.swift-fetch-manifest.json`, `${prefix}config.json`, `${prefix}model.safetensors`]);
    await until(async () => a.reconciler.list().every((m) => m.state === 'ready'), 'both models ready');
    // The model not listed under backup.models stays out of the bucket.
    expect(await minio.client.list('backups', 'cluster-a/hf/org/other/')).toEqual([]);

    hub.resetStats();
    const b = await daemon('models: [hf://org/wanted]\nreplicas: [s3://backups/cluster-a]\n', await tmpDir());
    const ready = await until(async () => b.reconciler.list().find((m) => m.state === 'ready'), 'the replica pull');
    expect(hub.log.filter((e) => e.host === 'cdn' || /\/resolve\//.test(e.url))).toEqual([]);
    for (const [p, body] of Object.entries(WANTED)) expect(sha(await readFile(join(ready.path!, p)))).toBe(sha(body));
  });
});
