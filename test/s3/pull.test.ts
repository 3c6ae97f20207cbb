/**
 * `swift-fetch pull s3://BUCKET/PREFIX` against a real MinIO: what it publishes, how it says where
 * integrity came from, what a changed object does, and the exit codes of the ways it can fail.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTree, runCli, tmpDir } from '../support/index.js';
import { skipWithoutMinio, startMinio, type Minio } from '../support/minio.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const b64 = (hex: string) => Buffer.from(hex, 'hex').toString('base64');

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + seed * 7 + (i >> 11)) & 0xff;
  return b;
}

const WEIGHTS = pattern(6 * 1024 * 1024 + 5, 1);
const FILES: Record<string, Buffer> = {
  'config.json': Buffer.from('{"model_type":"qwen2"}'),
  'tokenizer/vocab.json': Buffer.from('{"a":1}'),
  'model.safetensors': WEIGHTS,
};

let minio: Minio;

async function store() {
  const dir = await tmpDir();
  return { dir, args: ['--store', join(dir, 'store'), '--state-dir', join(dir, 'state')] };
}

async function record(storeDir: string): Promise<{ files: Array<{ path: string; verified: boolean; sha256: string }>; commit: string }> {
  const recs = join(storeDir, '.swift-fetch', 'records');
  const [repo] = await fsp.readdir(recs);
  const file = (await fsp.readdir(join(recs, repo!))).find((f) => f.endsWith('.json'))!;
  return JSON.parse(await fsp.readFile(join(recs, repo!, file), 'utf8'));
}

describe.skipIf(skipWithoutMinio())('pull s3://', () => {
  beforeAll(async () => {
    minio = await startMinio();
    await minio.createBucket('models');
    // config.json with a whole-object SHA-256 checksum; the rest uploaded without any.
    for (const [p, body] of Object.entries(FILES)) {
      await minio.client.put('models', `ckpt/v1/${p}`, body, body.length, p === 'config.json' ? { sha256: b64(sha(body)) } : {});
    }
    // A neighbouring prefix that shares the first characters must not leak into the model.
    await minio.client.put('models', 'ckpt/v10/other.bin', Buffer.from('x'), 1);
    // A console-made "folder" marker is not a file.
    await minio.client.put('models', 'ckpt/v1/tokenizer/', Buffer.alloc(0), 0);
  }, 120_000);
  afterAll(async () => minio?.stop());

  it('publishes every object under PREFIX/ byte for byte, and `path` finds it offline', async () => {
    const s = await store();
    const r = await runCli(['pull', 's3://models/ckpt/v1', ...s.args, '--json'], { env: minio.env() });
    expect(r.code, r.stderr).toBe(0);
    const done = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { path: string; commit: string; bytesDownloaded: number };
    expect(done.path).toBe(join(s.dir, 'store', 'models', 's3', 'models', 'ckpt', 'v1', done.commit));
    const tree = await readTree(done.path);
    expect([...tree.keys()].sort()).toEqual(Object.keys(FILES).sort());
    for (const [p, body] of Object.entries(FILES)) expect(sha(tree.get(p)!)).toBe(sha(body));
    expect(done.bytesDownloaded).toBe(Object.values(FILES).reduce((n, b) => n + b.length, 0));

    // Only the checksummed object counts as verified; the others are said to be unvouched.
    const rec = await record(join(s.dir, 'store'));
    expect(Object.fromEntries(rec.files.map((f) => [f.path, f.verified]))).toEqual({ 'config.json': true, 'model.safetensors': false, 'tokenizer/vocab.json': false });
    const warn = r.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { msg: string; files: string[] });
    expect(warn).toHaveLength(1);
    expect(warn[0]!.msg).toMatch(/nothing upstream vouched/);
    expect(warn[0]!.files.sort()).toEqual(['model.safetensors', 'tokenizer/vocab.json']);

    // No hub views for bucket models.
    expect(await fsp.readdir(join(s.dir, 'store'))).not.toContain('huggingface');

    const p = await runCli(['path', 's3://models/ckpt/v1', ...s.args], { env: minio.env({ AWS_ENDPOINT_URL: 'http://127.0.0.1:9' }) });
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout.trim()).toBe(done.path);

    // Again: nothing to move.
    const again = await runCli(['pull', 's3://models/ckpt/v1', ...s.args, '--json'], { env: minio.env() });
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout.trim().split('\n').at(-1)!)).toMatchObject({ alreadyComplete: true, bytesDownloaded: 0, commit: done.commit });
  });

  it('a rewritten object is a new revision in a new directory; the old revision id is then gone (exit 3)', async () => {
    await minio.createBucket('moving');
    await minio.client.put('moving', 'm/a.bin', Buffer.from('first'), 5);
    await minio.client.put('moving', 'm/b.bin', Buffer.from('same'), 4);
    const s = await store();
    const r1 = await runCli(['pull', 's3://moving/m', ...s.args, '-q'], { env: minio.env() });
    expect(r1.code, r1.stderr).toBe(0);
    await minio.client.put('moving', 'm/a.bin', Buffer.from('second'), 6);
    const r2 = await runCli(['pull', 's3://moving/m', ...s.args, '-q'], { env: minio.env() });
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stdout.trim()).not.toBe(r1.stdout.trim());
    expect(await fsp.readFile(join(r2.stdout.trim(), 'a.bin'), 'utf8')).toBe('second');
    expect(await fsp.readFile(join(r1.stdout.trim(), 'a.bin'), 'utf8')).toBe('first');
    const oldRev = r1.stdout.trim().split('/').at(-1)!;
    const pinned = await runCli(['pull', `s3://moving/m@${oldRev}`, ...s.args, '-q'], { env: minio.env() });
    expect(pinned.code).toBe(3);
    expect(pinned.stderr).toMatch(/objects changed/);
  });

  it('exit 3 for a prefix with no objects and for a bucket that does not exist', async () => {
    const s = await store();
    const empty = await runCli(['pull', 's3://models/nothing-here', ...s.args, '-q'], { env: minio.env() });
    expect(empty.code).toBe(3);
    expect(empty.stderr).toMatch(/no objects under s3:\/\/models\/nothing-here\//);
    const nob = await runCli(['pull', 's3://no-such-bucket/x', ...s.args, '-q'], { env: minio.env() });
    expect(nob.code).toBe(3);
    expect(nob.stderr).toMatch(/bucket s3:\/\/no-such-bucket does not exist/);
    expect(await fsp.readdir(join(s.dir, 'store')).catch(() => [])).not.toContain('models');
  });

  it('exit 4 for a wrong secret or an unknown key, and the secret never reaches the output', async () => {
    const s = await store();
    const secret = 'wrong-secret-0123456789abcdef';
    const bad = await runCli(['pull', 's3://models/ckpt/v1', ...s.args, '-q', '--log-level', 'trace'], { env: minio.env({ AWS_SECRET_ACCESS_KEY: secret }) });
    expect(bad.code).toBe(4);
    expect(bad.stderr).toMatch(/SignatureDoesNotMatch/);
    expect(bad.stderr + bad.stdout).not.toContain(secret);
    const unknown = await runCli(['pull', 's3://models/ckpt/v1', ...s.args, '-q'], { env: minio.env({ AWS_ACCESS_KEY_ID: 'nobody' }) });
    expect(unknown.code).toBe(4);
    expect(unknown.stderr).toMatch(/InvalidAccessKeyId/);
  });

  it('exit 4 when no credentials are found at all, without leaving loopback', async () => {
    const s = await store();
    const r = await runCli(['pull', 's3://models/ckpt/v1', ...s.args, '-q'], { env: minio.env({ AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined }) });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/cannot get AWS credentials from the AWS default credential chain/);
  });

  it('exit 7 when the endpoint does not answer', async () => {
    const s = await store();
    const r = await runCli(['pull', 's3://models/ckpt/v1', ...s.args, '-q'], { env: minio.env({ AWS_ENDPOINT_URL: 'http://127.0.0.1:9' }) });
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/127\.0\.0\.1:9/);
  });

  it('exit 2 for malformed s3 refs and endpoints', async () => {
    const s = await store();
    for (const ref of ['s3://Bad_Bucket/x', 's3://models', 's3://models/a/../b', 's3://models/x@main']) {
      const r = await runCli(['pull', ref, ...s.args, '-q'], { env: minio.env() });
      expect([ref, r.code]).toEqual([ref, 2]);
    }
    const r = await runCli(['pull', 's3://models/ckpt/v1', ...s.args, '-q'], { env: minio.env({ AWS_ENDPOINT_URL: 'not a url' }) });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/AWS_ENDPOINT_URL/);
  });
});
