import { createHash } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

let hub: FakeHub;
const big = Buffer.alloc(3 * 1024 * 1024 + 17);
for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
const FILES: Record<string, Buffer | string> = {
  'config.json': '{"model_type":"demo"}',
  'nested/dir/tokenizer.json': '{"tok":true}',
  'model.safetensors': big,
  'README.md': '# demo\n',
};

function env(extra: Record<string, string | undefined> = {}) {
  return {
    HF_ENDPOINT: hub.hfEndpoint,
    MODELSCOPE_ENDPOINT: hub.msEndpoint,
    HF_TOKEN: undefined,
    HUGGING_FACE_HUB_TOKEN: undefined,
    HF_HOME: '/nonexistent-hf-home',
    MODELSCOPE_API_TOKEN: undefined,
    USE_HF: undefined,
    HTTPS_PROXY: undefined,
    HTTP_PROXY: undefined,
    ...extra,
  };
}

async function store() {
  const dir = await tmpDir();
  return { dir, args: ['--store', join(dir, 'store'), '--state-dir', join(dir, 'state')] };
}

const downloads = () => hub.log.filter((e) => e.host === 'cdn' || /\/resolve\/|\/repo\?/.test(e.url));

beforeAll(async () => {
  hub = await startFakeHub({ treePageSize: 2 });
  await hub.addRepo({ id: 'demo/tiny', files: FILES });
  await hub.addRepo({ id: 'demo/gated', files: { 'config.json': '{}', 'weights.bin': big }, gated: { token: 'hf_sekrit_token_123' } });
  await hub.addRepo({ id: 'evil/dotdot', files: { 'ok.txt': 'ok' }, extraListing: [{ path: '../escape.txt', size: 3 }] });
  await hub.addRepo({ id: 'evil/abs', files: { 'ok.txt': 'ok' }, extraListing: [{ path: '/tmp/abs-escape.txt', size: 3 }] });
  await hub.addRepo({ id: 'evil/nul', files: { 'ok.txt': 'ok' }, extraListing: [{ path: 'a\u0000b', size: 3 }] });
});
afterAll(async () => hub?.close());

describe('swift-fetch pull', () => {
  it.each(['hf', 'ms'])('pulls a %s repo, publishes every file verified, and a second pull moves no file bytes', async (hubName) => {
    const s = await store();
    const ref = `${hubName}://demo/tiny`;
    const r1 = await runCli(['pull', ref, ...s.args, '--json'], { env: env() });
    expect(r1.stderr).toBe('');
    expect(r1.code).toBe(0);
    const events = r1.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; path?: string; bytesDownloaded?: number });
    const done = events.at(-1)!;
    expect(done.type).toBe('done');
    expect(events.some((e) => e.type === 'resolved')).toBe(true);
    for (const [p, content] of Object.entries(FILES)) {
      expect(sha(await fsp.readFile(join(done.path!, p)))).toBe(sha(content));
    }
    expect(done.bytesDownloaded).toBe(Object.values(FILES).reduce((n, c) => n + Buffer.byteLength(c), 0));

    // `path` answers offline with the same directory.
    const p = await runCli(['path', ref, ...s.args], { env: env({ HF_ENDPOINT: 'http://127.0.0.1:9', MODELSCOPE_ENDPOINT: 'http://127.0.0.1:9' }) });
    expect(p.code).toBe(0);
    expect(p.stdout.trim()).toBe(done.path);

    hub.resetStats();
    const r2 = await runCli(['pull', ref, ...s.args, '--json'], { env: env() });
    expect(r2.code).toBe(0);
    expect(downloads()).toEqual([]);
    expect(hub.bytesSent({ host: 'cdn' })).toBe(0);
    expect(JSON.parse(r2.stdout.trim().split('\n').at(-1)!)).toMatchObject({ alreadyComplete: true, bytesDownloaded: 0 });
  });

  it('narrows with --include/--exclude, and a wider pull later adds only what is missing', async () => {
    const s = await store();
    const r1 = await runCli(['pull', 'hf://demo/tiny', ...s.args, '-q', '--include', '*.json', '--exclude', 'nested/*'], { env: env() });
    expect(r1.code).toBe(0);
    const dir = r1.stdout.trim();
    expect((await fsp.readdir(dir)).sort()).toEqual(['config.json']);
    hub.resetStats();
    const r2 = await runCli(['pull', 'hf://demo/tiny', ...s.args, '-q'], { env: env() });
    expect(r2.code).toBe(0);
    expect(r2.stdout.trim()).toBe(dir);
    expect((await fsp.readdir(dir)).sort()).toEqual(['README.md', 'config.json', 'model.safetensors', 'nested']);
    expect(downloads().some((e) => e.url.includes('config.json'))).toBe(false);
  });

  it('shares identical content between repos and hubs: one blob on disk', async () => {
    const s = await store();
    expect((await runCli(['pull', 'hf://demo/tiny', ...s.args, '-q'], { env: env() })).code).toBe(0);
    hub.resetStats();
    expect((await runCli(['pull', 'ms://demo/tiny', ...s.args, '-q'], { env: env() })).code).toBe(0);
    // ModelScope gives SHA-256 for every file: all content is already in the blob store.
    expect(hub.bytesSent()).toBeLessThan(64 * 1024);
    const blob = join(s.dir, 'store', '.swift-fetch', 'blobs', 'sha256', sha(big).slice(0, 2), sha(big));
    const st = await fsp.stat(blob);
    // blob store + HF blobs/ + HF plain + MS snapshot + MS plain = 5 names, one inode
    expect(st.nlink).toBe(5);
  });
  it('two concurrent pulls of different revisions sharing content download it once', async () => {
    const s = await store();
    hub.resetStats();
    hub.perConnectionRate = 2 * 1024 * 1024;
    try {
      const [a, b] = await Promise.all([
        runCli(['pull', 'hf://demo/tiny', ...s.args, '-q', '--connections', '2'], { env: env() }),
        runCli(['pull', 'ms://demo/tiny', ...s.args, '-q', '--connections', '2'], { env: env() }),
      ]);
      expect([a.code, b.code, a.stderr, b.stderr]).toEqual([0, 0, '', '']);
      for (const r of [a, b]) expect(sha(await fsp.readFile(join(r.stdout.trim(), 'model.safetensors')))).toBe(sha(big));
      const modelBytes = hub.bytesSent({ path: 'model.safetensors' });
      expect(modelBytes).toBeGreaterThanOrEqual(big.length);
      expect(modelBytes).toBeLessThan(big.length * 1.1);
    } finally {
      hub.perConnectionRate = undefined;
    }
  });
});

describe('bad input', () => {
  it.each([
    ['evil/dotdot', '../escape.txt'],
    ['evil/abs', '/tmp/abs-escape.txt'],
    ['evil/nul', 'a\u0000b'],
  ])('a listing of %s with a hostile path exits 2, names the path and writes nothing', async (repo, bad) => {
    for (const h of ['hf', 'ms']) {
      const s = await store();
      const r = await runCli(['pull', `${h}://${repo}`, ...s.args], { env: env() });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(JSON.stringify(bad));
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(existsSync(join(s.dir, 'store'))).toBe(false);
      expect(existsSync(join(s.dir, 'escape.txt'))).toBe(false);
    }
    expect(existsSync('/tmp/abs-escape.txt')).toBe(false);
  });

  it.each([
    ['hf://nobody/nothing', /not found/],
    ['hf://demo/tiny@no-such-branch', /revision "no-such-branch" not found/],
    ['ms://nobody/nothing', /not found/],
    ['ms://demo/tiny@no-such-branch', /not found/],
  ])('%s exits 3', async (ref, msg) => {
    const s = await store();
    const r = await runCli(['pull', ref, ...s.args], { env: env() });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(msg);
  });

  it('a gated repo without a token exits 4 and says to set HF_TOKEN; a wrong token exits 4 too', async () => {
    const s = await store();
    const none = await runCli(['pull', 'hf://demo/gated', ...s.args], { env: env() });
    expect(none.code).toBe(4);
    expect(none.stderr).toMatch(/HF_TOKEN/);
    const wrong = await runCli(['pull', 'hf://demo/gated', ...s.args], { env: env({ HF_TOKEN: 'hf_wrong_token' }) });
    expect(wrong.code).toBe(4);
    expect(wrong.stderr).toMatch(/HF_TOKEN/);
    expect(wrong.stderr).not.toContain('hf_wrong_token');
    const msNone = await runCli(['pull', 'ms://demo/gated', ...s.args], { env: env() });
    expect(msNone.code).toBe(4);
    expect(msNone.stderr).toMatch(/MODELSCOPE_API_TOKEN/);
  });

  it('sends the token to the hub only: never to the CDN, never printed, never logged', async () => {
    const s = await store();
    const token = 'hf_sekrit_token_123';
    hub.resetStats();
    const r = await runCli(['pull', 'hf://demo/gated', ...s.args, '--json', '--log-level', 'trace'], { env: env({ HF_TOKEN: token }) });
    expect(r.code).toBe(0);
    const cdn = hub.log.filter((e) => e.host === 'cdn');
    expect(cdn.length).toBeGreaterThan(0);
    for (const e of cdn) expect(JSON.stringify(e.headers).toLowerCase()).not.toContain('authorization');
    expect(hub.log.filter((e) => e.host === 'hub').every((e) => e.headers.authorization === `Bearer ${token}`)).toBe(true);
    expect(r.stdout + r.stderr).not.toContain(token);

    const ms = await runCli(['pull', 'ms://demo/gated', ...s.args, '--json', '--log-level', 'trace'], { env: env({ MODELSCOPE_API_TOKEN: token }) });
    expect(ms.code).toBe(0);
    expect(ms.stdout + ms.stderr).not.toContain(token);
    for (const e of hub.log.filter((x) => x.host === 'cdn')) expect(JSON.stringify(e.headers)).not.toContain(token);
  });

  it.each([
    [['pull', 's3://a/b']],
    [['pull', 'hf://a']],
    [['pull', 'hf://a/b', '--connections', 'many']],
    [['pull', 'hf://a/b', '--max-rate', 'fast']],
    [['pull', 'hf://a/b', '--chunk-size', 'huge']],
    [['pull', 'hf://a/b', '--no-such-flag']],
    [['pull']],
    [['frobnicate']],
  ])('%j exits 2 with a one-line reason', async (args) => {
    const s = await store();
    const r = await runCli([...args, ...s.args], { env: env() });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^swift-fetch: /);
  });

  it('a file that is always corrupted fails with exit 5 and publishes nothing', async () => {
    const s = await store();
    await hub.addRepo({ id: 'demo/rotten', files: { 'config.json': '{}', 'model.safetensors': big } });
    hub.fault({ kind: 'corrupt', path: 'model.safetensors', offset: 1000, times: Infinity });
    try {
      const r = await runCli(['pull', 'hf://demo/rotten', ...s.args], { env: env() });
      expect(r.code).toBe(5);
      expect(r.stderr).toMatch(/model\.safetensors/);
      expect(existsSync(join(s.dir, 'store', 'models'))).toBe(false);
      expect(existsSync(join(s.dir, 'store', 'huggingface', 'hub', 'models--demo--rotten', 'snapshots'))).toBe(false);
    } finally {
      hub.clearFaults();
    }
  });
});

describe('ls, verify, rm', () => {
  it('lists, detects a tampered file with exit 5, removes and frees blobs', async () => {
    const s = await store();
    const pulled = await runCli(['pull', 'hf://demo/tiny', ...s.args, '-q'], { env: env() });
    expect(pulled.code).toBe(0);
    const ls = await runCli(['ls', ...s.args, '--json']);
    expect(ls.code).toBe(0);
    const rows = ls.stdout.trim().split('\n').map((l) => JSON.parse(l) as { ref: string; files: number });
    expect(rows).toEqual([expect.objectContaining({ ref: 'hf://demo/tiny', files: 4 })]);

    expect((await runCli(['verify', ...s.args])).code).toBe(0);
    const victim = join(pulled.stdout.trim(), 'config.json');
    await fsp.chmod(victim, 0o644);
    await fsp.writeFile(victim, '{"model_type":"evil"}');
    const v = await runCli(['verify', 'hf://demo/tiny', ...s.args]);
    expect(v.code).toBe(5);
    expect(v.stdout).toMatch(/config\.json/);

    const rm = await runCli(['rm', 'hf://demo/tiny', ...s.args, '--json']);
    expect(rm.code).toBe(0);
    expect(JSON.parse(rm.stdout).freedBlobs).toBe(4);
    expect(existsSync(pulled.stdout.trim())).toBe(false);
    expect(existsSync(join(s.dir, 'store', 'huggingface', 'hub', 'models--demo--tiny', 'snapshots', pulled.stdout.trim().split('/').at(-1)!))).toBe(false);
    const gone = await runCli(['path', 'hf://demo/tiny', ...s.args]);
    expect(gone.code).toBe(3);
  });
});
