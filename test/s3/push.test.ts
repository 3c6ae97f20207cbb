/**
 * `swift-fetch push` against a real MinIO: hub -> store -> bucket -> another store, byte for byte;
 * a second push moves nothing; a tampered bucket is refused on the way back (exit 5, nothing
 * published); a multipart push killed with SIGKILL resumes from the parts the bucket holds.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { cliPath, readTree, runCli, tmpDir } from '../support/index.js';
import { mergedEnv } from '../support/spawn.js';
import { skipWithoutMinio, startMinio, type Minio } from '../support/minio.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const MiB = 1024 * 1024;

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + seed * 7 + (i >> 13)) & 0xff;
  return b;
}

const SMALL: Record<string, Buffer> = {
  'config.json': Buffer.from('{"model_type":"demo"}'),
  'nested/dir/tokenizer.json': Buffer.from('{"tok":true}'),
  'model.safetensors': pattern(3 * MiB + 17, 1),
};
const BIG = pattern(40 * MiB + 3, 2);

let hub: FakeHub;
let minio: Minio;

function env(extra: Record<string, string | undefined> = {}) {
  return minio.env({ HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: undefined, HF_HOME: '/nonexistent-hf-home', ...extra });
}

async function store() {
  const dir = await tmpDir();
  return { dir, root: join(dir, 'store'), args: ['--store', join(dir, 'store'), '--state-dir', join(dir, 'state')] };
}

function lastJson<T>(stdout: string): T {
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as T;
}

async function pulled(ref: string, s: { args: string[] }): Promise<string> {
  const r = await runCli(['pull', ref, ...s.args, '-q'], { env: env() });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

describe.skipIf(skipWithoutMinio())('push', () => {
  beforeAll(async () => {
    [hub, minio] = await Promise.all([startFakeHub(), startMinio()]);
    await hub.addRepo({ id: 'demo/tiny', files: SMALL });
    await hub.addRepo({ id: 'demo/big', files: { 'config.json': '{}', 'model.safetensors': BIG } });
    await minio.createBucket('team');
  }, 120_000);
  afterAll(async () => {
    await Promise.all([hub?.close(), minio?.stop()]);
  });

  it('round trip: hub -> store -> bucket -> another store is byte-identical and verified; pushing again moves nothing', async () => {
    const a = await store();
    const src = await pulled('hf://demo/tiny', a);

    const p1 = await runCli(['push', 'hf://demo/tiny', 's3://team/rt/tiny', ...a.args, '--json'], { env: env() });
    expect(p1.code, p1.stderr).toBe(0);
    const total = Object.values(SMALL).reduce((n, b) => n + b.length, 0);
    expect(lastJson(p1.stdout)).toMatchObject({ type: 'done', dest: 's3://team/rt/tiny', bytesUploaded: total, alreadyComplete: false });

    // The bucket holds the files under the prefix, plus the manifest, and keeps each file's SHA-256.
    const keys = (await minio.client.list('team', 'rt/tiny/')).map((o) => o.key).sort();
    expect(keys).toEqual(['rt/tiny/.swift-fetch-manifest.json', 'rt/tiny/config.json', 'rt/tiny/model.safetensors', 'rt/tiny/nested/dir/tokenizer.json']);
    const head = await minio.client.head('team', 'rt/tiny/model.safetensors');
    expect(Buffer.from(head!.sha256!, 'base64').toString('hex')).toBe(sha(SMALL['model.safetensors']!));

    expect(p1.stderr).toBe('');
    const p2 = await runCli(['push', 'hf://demo/tiny', 's3://team/rt/tiny', ...a.args, '--json'], { env: env() });
    expect(p2.code, p2.stderr).toBe(0);
    expect(lastJson(p2.stdout)).toMatchObject({ bytesUploaded: 0, alreadyComplete: true });
    // Not even the manifest was rewritten.
    const after = (await minio.client.list('team', 'rt/tiny/')).find((o) => o.key.endsWith('manifest.json'))!;
    const before = (await minio.client.getText('team', 'rt/tiny/.swift-fetch-manifest.json'))!;
    expect(after.etag).toBe(before.etag);

    const b = await store();
    hub.resetStats();
    const out = await pulled('s3://team/rt/tiny', b);
    expect(hub.log).toEqual([]);
    const [x, y] = await Promise.all([readTree(src), readTree(out)]);
    expect([...y.keys()].sort()).toEqual([...x.keys()].sort());
    for (const [p, body] of x) expect(sha(y.get(p)!)).toBe(sha(body));
    // The manifest vouched for every file.
    const recDir = join(b.root, '.swift-fetch', 'records');
    const [repo] = await fsp.readdir(recDir);
    const rec = JSON.parse(await fsp.readFile(join(recDir, repo!, (await fsp.readdir(join(recDir, repo!))).find((f) => f.endsWith('.json'))!), 'utf8')) as { files: Array<{ verified: boolean }> };
    expect(rec.files.every((f) => f.verified)).toBe(true);
  });

  it('a tampered object is refused (exit 5) and nothing is published', async () => {
    const a = await store();
    await pulled('hf://demo/tiny', a);
    expect((await runCli(['push', 'hf://demo/tiny', 's3://team/tamper', ...a.args, '-q'], { env: env() })).code).toBe(0);
    // Same size, other bytes: only the content check can tell.
    const evil = Buffer.from(SMALL['model.safetensors']!);
    evil[12345]! ^= 0xff;
    await minio.client.put('team', 'tamper/model.safetensors', evil, evil.length);

    const b = await store();
    const r = await runCli(['pull', 's3://team/tamper', ...b.args, '-q'], { env: env() });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/model\.safetensors/);
    expect(existsSync(join(b.root, 'models'))).toBe(false);
    expect(await fsp.readdir(join(b.root, '.swift-fetch', 'records')).catch(() => [])).toEqual([]);

    // Pushing over a prefix that holds something else warns that a pull would include it.
    await minio.client.put('team', 'tamper/stray.txt', Buffer.from('not ours'), 8);
    const over = await runCli(['push', 'hf://demo/tiny', 's3://team/tamper', ...a.args, '-q'], { env: env() });
    expect(over.code, over.stderr).toBe(0);
    expect(over.stderr).toMatch(/not part of this revision/);
    expect(over.stderr).toContain('tamper/stray.txt');
    await minio.client.delete('team', 'tamper/stray.txt');
    await minio.client.put('team', 'tamper/model.safetensors', evil, evil.length);

    // A size that disagrees with the manifest fails before any byte moves.
    await minio.client.put('team', 'tamper/config.json', Buffer.from('{"much":"longer than before"}'), 29);
    const c = await store();
    const r2 = await runCli(['pull', 's3://team/tamper', ...c.args, '--json'], { env: env() });
    expect(r2.code).toBe(5);
    expect(r2.stderr).toMatch(/manifest says \d+ bytes/);
    expect(r2.stdout).not.toMatch(/"progress"/);

    // An object the manifest lists but the bucket lost: exit 5 too.
    await minio.client.delete('team', 'tamper/nested/dir/tokenizer.json');
    const r3 = await runCli(['pull', 's3://team/tamper', ...c.args, '-q'], { env: env() });
    expect(r3.code).toBe(5);
    expect(r3.stderr).toMatch(/not in the bucket/);
  });

  it('a store blob that rotted on disk is never pushed (exit 5): the multipart upload is aborted, no object appears', async () => {
    const a = await store();
    await pulled('hf://demo/big', a);
    const blob = join(a.root, '.swift-fetch', 'blobs', 'sha256', sha(BIG).slice(0, 2), sha(BIG));
    const fh = await fsp.open(blob, 'r+');
    await fh.write(Buffer.from([BIG[20 * MiB]! ^ 0xff]), 0, 1, 20 * MiB);
    await fh.close();
    const r = await runCli(['push', 'hf://demo/big', 's3://team/rotten', ...a.args, '-q', '--part-size', '8MiB'], { env: env() });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/no longer matches its SHA-256/);
    expect((await minio.client.list('team', 'rotten/')).map((o) => o.key)).not.toContain('rotten/model.safetensors');
    expect(await minio.client.listUploads('team', 'rotten/model.safetensors')).toEqual([]);
  });

  it('exit 3 pushing a model the store does not have; exit 3 for a missing bucket; exit 4 for refused credentials', async () => {
    const a = await store();
    const none = await runCli(['push', 'hf://demo/tiny', 's3://team/x', ...a.args, '-q'], { env: env() });
    expect(none.code).toBe(3);
    await pulled('hf://demo/tiny', a);
    const nob = await runCli(['push', 'hf://demo/tiny', 's3://no-such-bucket/x', ...a.args, '-q'], { env: env() });
    expect(nob.code).toBe(3);
    const bad = await runCli(['push', 'hf://demo/tiny', 's3://team/x', ...a.args, '-q'], { env: env({ AWS_SECRET_ACCESS_KEY: 'nope-nope-nope' }) });
    expect(bad.code).toBe(4);
  });

  it('two pushes of one revision to one prefix at once upload it once: the second waits for the first', async () => {
    const a = await store();
    await pulled('hf://demo/big', a);
    const proxy = await minio.proxy();
    const args = ['push', 'hf://demo/big', 's3://team/together', ...a.args, '--json', '--max-rate', '8MB/s'];
    const e = env({ AWS_ENDPOINT_URL: proxy.endpoint });
    const [x, y] = await Promise.all([runCli(args, { env: e }), runCli(args, { env: e })]);
    expect([x.code, y.code], x.stderr + y.stderr).toEqual([0, 0]);
    const events = [x, y].map((r) => r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; bytesUploaded?: number }));
    const uploaded = events.map((ev) => ev.at(-1)!.bytesUploaded!);
    expect([...uploaded].sort((m, n) => m - n)).toEqual([0, BIG.length + 2]);
    // The one that moved nothing had waited for the other.
    expect(events[uploaded.indexOf(0)]!.some((ev) => ev.type === 'waiting')).toBe(true);
    // On the wire: one copy of the model (plus requests' headers), not two.
    expect(proxy.bytesUp()).toBeLessThan(BIG.length * 1.1);
    expect((await minio.client.list('team', 'together/')).map((o) => o.key)).not.toContain('together/.swift-fetch-push.lock');
  });

  it('a stale push lease (its holder died) is taken over; a live one is waited for', async () => {
    const a = await store();
    await pulled('hf://demo/tiny', a);
    const lease = (expiresAt: number) => Buffer.from(JSON.stringify({ holder: 'node-x:1234', expiresAt }));
    const stale = lease(Date.now() - 10 * 60_000);
    await minio.client.put('team', 'leased/.swift-fetch-push.lock', stale, stale.length);
    const r1 = await runCli(['push', 'hf://demo/tiny', 's3://team/leased', ...a.args, '--json'], { env: env() });
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stdout).not.toMatch(/"waiting"/);

    const live = lease(Date.now() + 60_000);
    await minio.client.put('team', 'leased2/.swift-fetch-push.lock', live, live.length);
    const child = spawn(process.execPath, [cliPath, 'push', 'hf://demo/tiny', 's3://team/leased2', ...a.args, '--json'], { env: mergedEnv(env()), stdio: ['ignore', 'pipe', 'pipe'] });
    const seen: string[] = [];
    const closed = new Promise<void>((r) => child.stdout!.once('close', () => r()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const waiting = new Promise<void>((resolve) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        seen.push(line);
        if (/"type":"waiting","holder":"node-x:1234"/.test(line)) resolve();
      });
    });
    await Promise.race([waiting, exited]);
    expect(seen.at(-1)).toMatch(/"type":"waiting"/);
    // While it waits, nothing of it is in the bucket; once the holder is done, it goes ahead.
    expect((await minio.client.list('team', 'leased2/')).map((o) => o.key)).toEqual(['leased2/.swift-fetch-push.lock']);
    await minio.client.delete('team', 'leased2/.swift-fetch-push.lock');
    expect(await exited).toBe(0);
    await closed;
    expect(JSON.parse(seen.at(-1)!)).toMatchObject({ type: 'done', alreadyComplete: false });
    expect((await minio.client.list('team', 'leased2/')).map((o) => o.key).sort()).toEqual(['leased2/.swift-fetch-manifest.json', 'leased2/config.json', 'leased2/model.safetensors', 'leased2/nested/dir/tokenizer.json']);
  });

  it('a multipart push killed with SIGKILL resumes from the parts the bucket kept, and the result pulls back intact', async () => {
    const a = await store();
    await pulled('hf://demo/big', a);
    const args = ['push', 'hf://demo/big', 's3://team/big', ...a.args, '--json', '--part-size', '5MiB', '--connections', '1', '--max-rate', '10MB/s'];
    const child = spawn(process.execPath, [cliPath, ...args], { env: mergedEnv(env()), stdio: ['ignore', 'pipe', 'pipe'] });
    let seen = 0;
    const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_c, sig) => r(sig)));
    for await (const line of createInterface({ input: child.stdout! })) {
      const e = JSON.parse(line) as { type: string; bytesDone?: number; bytesTotal?: number };
      if (e.type === 'progress' && e.bytesDone! >= 0.45 * BIG.length) {
        seen = e.bytesDone!;
        child.kill('SIGKILL');
        break;
      }
    }
    expect(await exited).toBe('SIGKILL');
    expect(seen).toBeGreaterThan(0);
    // The bucket holds an unfinished upload with some parts; no object yet.
    const ups = await minio.client.listUploads('team', 'big/model.safetensors');
    expect(ups.length).toBe(1);
    const held = await minio.client.listParts('team', 'big/model.safetensors', ups[0]!.uploadId);
    expect(held.length).toBeGreaterThanOrEqual(3);
    const landed = (await minio.client.list('team', 'big/')).map((o) => o.key);
    expect(landed).not.toContain('big/model.safetensors');
    const configBytes = landed.includes('big/config.json') ? 0 : 2;

    const again = await runCli(['push', 'hf://demo/big', 's3://team/big', ...a.args, '--json', '--part-size', '5MiB'], { env: env() });
    expect(again.code, again.stderr).toBe(0);
    const events = again.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; file?: string; partsKept?: number; parts?: number; bytesUploaded?: number });
    const up = events.find((e) => e.type === 'file-uploaded' && e.file === 'model.safetensors')!;
    expect(up.parts).toBe(Math.ceil(BIG.length / (5 * MiB)));
    expect(up.partsKept).toBe(held.length);
    const done = events.at(-1)!;
    expect(done.bytesUploaded).toBe(BIG.length - held.reduce((n, p) => n + p.size, 0) + configBytes);
    expect(await minio.client.listUploads('team', 'big/model.safetensors')).toEqual([]);

    const b = await store();
    const out = await pulled('s3://team/big', b);
    expect(sha(await fsp.readFile(join(out, 'model.safetensors')))).toBe(sha(BIG));
  });
});
