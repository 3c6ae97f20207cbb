/**
 * `swift-fetch init` as an init container would run it: a real CLI process, a real store on disk,
 * the fake hub over HTTP, and (for the daemon cases) a real daemon serving its HTTP API.
 */
import { promises as fsp } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { hubEnv, pattern, sha, storeArgs } from '../bundle/helpers.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { readTree, runCli, tmpDir } from '../support/index.js';

let hub: FakeHub;
const big = pattern(3 * 1024 * 1024 + 5, 11);
const FILES: Record<string, Buffer | string> = {
  'config.json': '{"model_type":"demo"}',
  'model.safetensors': big,
  'sub/tokenizer.json': '{"t":1}',
};

/** A loopback port nobody listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

async function expectModel(path: string, files: Record<string, Buffer | string> = FILES): Promise<void> {
  const tree = await readTree(path);
  expect([...tree.keys()].sort()).toEqual(Object.keys(files).sort());
  for (const [p, c] of Object.entries(files)) expect(sha(tree.get(p)!)).toBe(sha(c));
}

const cdnBytes = () => hub.bytesSent({ host: 'cdn' });

beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'demo/tiny', files: FILES });
  await hub.addRepo({ id: 'demo/slow', files: { 'config.json': '{}', 'model.safetensors': pattern(2 * 1024 * 1024, 3) } });
  await hub.addRepo({ id: 'demo/stuck', files: { 'config.json': '{}', 'model.safetensors': pattern(2 * 1024 * 1024, 4) } });
  await hub.addRepo({ id: 'demo/pair', files: { 'config.json': '{"p":1}', 'model.safetensors': pattern(4 * 1024 * 1024, 5) } });
  await hub.addRepo({ id: 'demo/daemon', files: { 'config.json': '{"d":1}', 'model.safetensors': pattern(3 * 1024 * 1024, 6) } });
});
afterAll(async () => hub?.close());

describe('init without a daemon', () => {
  it('pulls the model itself when the daemon URL does not answer, prints the directory, writes the link file and link', async () => {
    const dir = await tmpDir();
    const port = await closedPort();
    const linkFile = join(dir, 'out', 'model-path');
    const link = join(dir, 'out', 'model');
    const r = await runCli(['init', 'hf://demo/tiny', ...storeArgs(dir), '--daemon', `http://127.0.0.1:${port}`, '--link-file', linkFile, '--link', link], { env: hubEnv(hub) });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/does not answer.*pulling hf:\/\/demo\/tiny@main here instead/);
    const path = r.stdout.trim();
    expect(path.startsWith(join(dir, 'store', 'models', 'hf', 'demo', 'tiny'))).toBe(true);
    await expectModel(path);
    expect(await fsp.readFile(linkFile, 'utf8')).toBe(`${path}\n`);
    expect(await fsp.readlink(link)).toBe(path);
    await expectModel(link);
  });

  it('fails with exit 3 for a model the hub does not have', async () => {
    const dir = await tmpDir();
    const r = await runCli(['init', 'hf://demo/missing', ...storeArgs(dir)], { env: hubEnv(hub) });
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('');
  });

  it('fails with exit 8 on timeout, naming what was still missing, and publishes nothing', async () => {
    const dir = await tmpDir();
    hub.fault({ kind: 'stall', host: 'cdn', path: 'model.safetensors', afterBytes: 100_000, times: Infinity });
    try {
      const r = await runCli(['init', 'hf://demo/stuck', 'hf://demo/tiny', ...storeArgs(dir), '--timeout', '3s'], { env: hubEnv(hub) });
      expect(r.code).toBe(8);
      expect(r.stderr).toMatch(/timed out after 3s; still missing: .*hf:\/\/demo\/stuck@main/);
      expect(r.stdout).toBe('');
      const stuck = await fsp.readdir(join(dir, 'store', 'models', 'hf', 'demo', 'stuck')).catch(() => []);
      expect(stuck).toEqual([]);
    } finally {
      hub.clearFaults();
    }
  });

  it('two concurrent inits on one store download the model once (lease protocol)', async () => {
    const dir = await tmpDir();
    const size = 4 * 1024 * 1024;
    hub.resetStats();
    hub.perConnectionRate = 2 * 1024 * 1024; // both processes are surely running while bytes flow
    try {
      const [a, b] = await Promise.all([
        runCli(['init', 'hf://demo/pair', ...storeArgs(dir)], { env: hubEnv(hub) }),
        runCli(['init', 'hf://demo/pair', ...storeArgs(dir)], { env: hubEnv(hub) }),
      ]);
      expect(a.code).toBe(0);
      expect(b.code).toBe(0);
      expect(a.stdout).toBe(b.stdout);
      expect(cdnBytes()).toBeGreaterThanOrEqual(size);
      expect(cdnBytes()).toBeLessThanOrEqual(size * 1.05);
    } finally {
      hub.perConnectionRate = undefined;
    }
  });
});

describe('init fast path', () => {
  it('answers from the store with no network at all, trusting the record; --verify re-hashes and catches a corrupt file', async () => {
    const dir = await tmpDir();
    const first = await runCli(['pull', 'hf://demo/tiny', ...storeArgs(dir), '--quiet'], { env: hubEnv(hub) });
    expect(first.code).toBe(0);
    const path = first.stdout.trim();
    hub.resetStats();
    const port = await closedPort();
    // Branch name, hub endpoints and daemon all pointing nowhere: only the store can answer.
    const r = await runCli(['init', 'hf://demo/tiny@main', ...storeArgs(dir), '--daemon', `http://127.0.0.1:${port}`], { env: hubEnv(undefined) });
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(path);
    expect(r.stderr).toBe('');
    expect(hub.log).toEqual([]);

    // Corrupt one published file in place (same size): the record is trusted without --verify.
    const victim = join(path, 'config.json');
    await fsp.chmod(victim, 0o644);
    const text = await fsp.readFile(victim, 'utf8');
    await fsp.writeFile(victim, text.replace('demo', 'omed'));
    const trusted = await runCli(['init', 'hf://demo/tiny', ...storeArgs(dir)], { env: hubEnv(undefined) });
    expect(trusted.code).toBe(0);
    const verified = await runCli(['init', 'hf://demo/tiny', ...storeArgs(dir), '--verify'], { env: hubEnv(undefined) });
    expect(verified.code).toBe(5);
    expect(verified.stderr).toMatch(/config\.json/);
    expect(hub.log).toEqual([]);
  });

  it('answers offline for a model that came in a bundle (the air-gapped flow)', async () => {
    const src = await tmpDir();
    const dst = await tmpDir();
    const bundle = join(src, 'm.tar');
    const c = await runCli(['bundle', 'create', 'hf://demo/tiny', '-o', bundle, ...storeArgs(src), '--quiet'], { env: hubEnv(hub) });
    expect(c.code).toBe(0);
    hub.resetStats();
    const i = await runCli(['bundle', 'import', bundle, ...storeArgs(dst)], { env: hubEnv(undefined) });
    expect(i.code).toBe(0);
    const r = await runCli(['init', 'hf://demo/tiny', ...storeArgs(dst), '--json'], { env: hubEnv(undefined) });
    expect(r.code).toBe(0);
    const ready = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { type: string; path: string; via: string };
    expect(ready).toMatchObject({ type: 'ready', via: 'store' });
    await expectModel(ready.path);
    expect(hub.log).toEqual([]);
  });
});

describe('init with a daemon', () => {
  let daemon: Daemon;
  let dir: string;
  beforeAll(async () => {
    dir = await tmpDir();
    const env = { ...process.env, ...hubEnv(hub) } as NodeJS.ProcessEnv;
    for (const [k, v] of Object.entries(hubEnv(hub))) if (v === undefined) delete env[k];
    const config = parseConfig(
      `store: ${join(dir, 'store')}\nstateDir: ${join(dir, 'daemon-state')}\nlisten: 127.0.0.1:0\nlogLevel: silent\n`,
      join(dir, 'config.yaml'),
      { env },
    );
    daemon = await startDaemon(config, {
      env,
      logger: pino({ level: 'silent' }),
      resyncMs: 0,
      backoff: { baseMs: 200, maxMs: 1_000, slowBaseMs: 200, slowMaxMs: 1_000 },
    });
  });
  afterAll(async () => daemon?.stop());

  it('asks the daemon, follows its progress, and exits 0 when it is ready; the init itself fetches nothing', async () => {
    hub.resetStats();
    hub.perConnectionRate = 1024 * 1024; // ~3 s: long enough for several progress lines
    try {
      const r = await runCli(
        ['init', 'hf://demo/daemon', '--store', join(dir, 'store'), '--state-dir', join(dir, 'init-state'), '--daemon', daemon.url, '--progress-interval', '300ms'],
        // The init process cannot reach any hub: whatever arrives, the daemon fetched.
        { env: hubEnv(undefined) },
      );
      expect(r.code).toBe(0);
      expect(r.stderr).toContain(`asked the daemon at ${daemon.url}`);
      expect(r.stderr).toMatch(/hf:\/\/demo\/daemon@main: (downloading|pending|verifying) \d+\.\d% \(.* of .*\) at .*\/s via daemon/);
      const path = r.stdout.trim();
      expect(path.startsWith(join(dir, 'store', 'models', 'hf', 'demo', 'daemon'))).toBe(true);
      await expectModel(path, { 'config.json': '{"d":1}', 'model.safetensors': pattern(3 * 1024 * 1024, 6) });
      expect(daemon.reconciler.get('hf://demo/daemon@main')?.state).toBe('ready');
      expect(cdnBytes()).toBeLessThanOrEqual(3 * 1024 * 1024 * 1.05);
    } finally {
      hub.perConnectionRate = undefined;
    }
  });

  it('a model the daemon cannot find: exit 3, from the code the daemon reports', async () => {
    // The init process cannot reach the hub: the exit code can only come from the daemon.
    const r = await runCli(['init', 'hf://demo/nothere', '--store', join(dir, 'store'), '--state-dir', join(dir, 'init-state'), '--daemon', daemon.url], {
      env: hubEnv(undefined),
    });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/daemon/);
    expect(r.stdout).toBe('');
  });

  it('a gated model the daemon has no token for: exit 4, from the code the daemon reports', async () => {
    await hub.addRepo({ id: 'demo/gated-init', files: { 'config.json': '{}' }, gated: { token: 'hf_init_gated' } });
    const r = await runCli(['init', 'hf://demo/gated-init', '--store', join(dir, 'store'), '--state-dir', join(dir, 'init-state'), '--daemon', daemon.url], {
      env: hubEnv(undefined),
    });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/HF_TOKEN/);
  });

  it('times out with exit 8 while the daemon is stuck, naming the model', async () => {
    hub.fault({ kind: 'stall', host: 'cdn', path: 'model.safetensors', afterBytes: 50_000, times: Infinity });
    try {
      const r = await runCli(['init', 'hf://demo/slow', '--store', join(dir, 'store'), '--state-dir', join(dir, 'init-state'), '--daemon', daemon.url, '--timeout', '3s'], {
        env: hubEnv(undefined),
      });
      expect(r.code).toBe(8);
      expect(r.stderr).toMatch(/still missing: hf:\/\/demo\/slow@main/);
    } finally {
      hub.clearFaults();
    }
  });

  it('bad usage: exit 2', async () => {
    const r = await runCli(['init', 'hf://demo/tiny', '--daemon', 'not a url', ...storeArgs(dir, 'x')], { env: hubEnv(undefined) });
    expect(r.code).toBe(2);
    const t = await runCli(['init', 'hf://demo/tiny', '--timeout', 'soon', ...storeArgs(dir, 'x')], { env: hubEnv(undefined) });
    expect(t.code).toBe(2);
  });
});



describe('init against a daemon that reports why it failed', () => {
  it('maps the reported exit code (4: auth) without pulling itself, and polls when there is no event stream', async () => {
    const dir = await tmpDir();
    const seen: string[] = [];
    let polls = 0;
    const status = (state: string, extra: Record<string, unknown> = {}) => ({
      ref: 'hf://demo/gated@main', commit: null, state, bytesDone: 0, bytesTotal: 0, path: null, error: null, attempts: 2, ...extra,
    });
    // A daemon whose model had already failed twice before our request (stale), then fails again.
    const srv = createHttpServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      const send = (code: number, body: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method === 'POST' && req.url === '/v1/pulls') return send(202, status('failed', { error: 'an old failure' }));
      if (req.url?.endsWith('/events?until=ready')) return send(404, { error: 'not found' });
      if (req.method === 'GET' && req.url === `/v1/models/${encodeURIComponent('hf://demo/gated@main')}`) {
        polls++;
        if (polls < 3) return send(200, status('downloading', { bytesTotal: 10 }));
        return send(200, status('failed', { attempts: 3, error: 'hf://demo/gated is gated: the token was rejected', exitCode: 4, errorCode: 'ESF_AUTH' }));
      }
      send(404, { error: 'not found' });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(srv.address() as { port: number }).port}`;
    try {
      // Hubs unreachable: had init pulled by itself, it would have failed with 7, not 4.
      const r = await runCli(['init', 'hf://demo/gated', ...storeArgs(dir), '--daemon', url], { env: hubEnv(undefined) });
      expect(r.stderr).toMatch(/token was rejected/);
      expect(r.code).toBe(4);
      expect(seen[0]).toBe('POST /v1/pulls');
      expect(polls).toBeGreaterThanOrEqual(3);
    } finally {
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});
