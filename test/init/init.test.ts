/**
 * `swift-fetch init` as an init container would run it: a real CLI process, a real store on disk,
 * the fake hub over HTTP, and (for the daemon cases) a real daemon serving its HTTP API.
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { hubEnv, pattern, sha, storeArgs } from '../bundle/helpers.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { freePort as closedPort, mountTmpfs, readTree, runCli, tmpDir } from '../support/index.js';
import { makeCa, makeCert, OPENSSL_MISSING } from '../daemon/certs.js';

let hub: FakeHub;
const big = pattern(3 * 1024 * 1024 + 5, 11);
const FILES: Record<string, Buffer | string> = {
  'config.json': '{"model_type":"demo"}',
  'model.safetensors': big,
  'sub/tokenizer.json': '{"t":1}',
};


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


describe('init with a daemon whose disk is full', () => {
  it('exits 6 (storage), the code the daemon reports for ESF_NO_SPACE', async (tc) => {
    const dir = await tmpDir();
    const store = join(dir, 'store');
    await fsp.mkdir(store);
    mountTmpfs(store, '4m', (why) => tc.skip(why), onTestFinished);
    await hub.addRepo({ id: 'demo/huge', files: { 'config.json': '{}', 'model.safetensors': pattern(8 * 1024 * 1024, 9) } });
    const env = { ...process.env } as NodeJS.ProcessEnv;
    for (const [k, v] of Object.entries(hubEnv(hub))) if (v === undefined) delete env[k]; else env[k] = v;
    const config = parseConfig(`store: ${store}\nstateDir: ${join(dir, 'daemon-state')}\nlisten: 127.0.0.1:0\n`, join(dir, 'config.yaml'), { env });
    const d = await startDaemon(config, { env, logger: pino({ level: 'silent' }), resyncMs: 0 });
    try {
      const r = await runCli(['init', 'hf://demo/huge', '--store', store, '--state-dir', join(dir, 'init-state'), '--daemon', d.url], { env: hubEnv(undefined) });
      expect(r.stderr).toMatch(/daemon failed to pull it: .*(space|ENOSPC)/i);
      expect(r.code).toBe(6);
      expect(d.reconciler.get('hf://demo/huge@main')).toMatchObject({ state: 'failed', exitCode: 6, errorCode: 'ESF_NO_SPACE' });
    } finally {
      await d.stop();
    }
  });
});

/** A hand-scripted daemon: what an older or differently built daemon may answer, which ours never does. */
async function scriptedDaemon(handler: (req: IncomingMessage, res: ServerResponse, send: (code: number, body: unknown) => void) => void): Promise<{ url: string; seen: string[]; close: () => Promise<void> }> {
  const seen: string[] = [];
  const srv = createHttpServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    handler(req, res, (code, body) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(srv.address() as { port: number }).port}`,
    seen,
    close: () => new Promise<void>((r) => srv.close(() => r())),
  };
}

const modelStatus = (ref: string, state: string, extra: Record<string, unknown> = {}) => ({
  ref, commit: null, state, bytesDone: 0, bytesTotal: 0, path: null, error: null, attempts: 2, ...extra,
});

describe('init against a daemon that reports why it failed', () => {
  it.each([
    ['404 (a daemon without the route)', 404, 'application/json'],
    ['200 with JSON (not an event stream)', 200, 'application/json'],
  ])('maps the reported exit code (4: auth) without pulling itself, and polls when the events route answers %s', async (_what, eventsStatus, eventsType) => {
    const dir = await tmpDir();
    const key = 'hf://demo/gated@main';
    let polls = 0;
    // A daemon whose model had already failed twice before our request (stale), then fails again.
    const d = await scriptedDaemon((req, res, send) => {
      if (req.method === 'POST' && req.url === '/v1/pulls') return send(202, modelStatus(key, 'failed', { error: 'an old failure' }));
      if (req.url?.includes('/events')) {
        res.writeHead(eventsStatus, { 'content-type': eventsType });
        return res.end(JSON.stringify(eventsStatus === 404 ? { error: 'not found' } : modelStatus(key, 'downloading')));
      }
      if (req.method === 'GET' && req.url === `/v1/models/${encodeURIComponent(key)}`) {
        polls++;
        if (polls < 3) return send(200, modelStatus(key, 'downloading', { bytesTotal: 10 }));
        return send(200, modelStatus(key, 'failed', { attempts: 3, error: 'hf://demo/gated is gated: the token was rejected', exitCode: 4, errorCode: 'ESF_AUTH' }));
      }
      send(404, { error: 'not found' });
    });
    try {
      // Hubs unreachable: had init pulled by itself, it would have failed with 7, not 4.
      const r = await runCli(['init', 'hf://demo/gated', ...storeArgs(dir), '--daemon', d.url], { env: hubEnv(undefined) });
      expect(r.stderr).toMatch(/token was rejected/);
      expect(r.code).toBe(4);
      expect(d.seen[0]).toBe('POST /v1/pulls');
      // The events route was tried once; from then on init polled the model.
      expect(d.seen.filter((l) => l.includes('/events'))).toHaveLength(1);
      expect(polls).toBeGreaterThanOrEqual(3);
    } finally {
      await d.close();
    }
  });

  it('exits with the exit code the daemon reports, whatever its error code is named (ESF_NO_SPACE: 6), and reads a message whose characters the network split', async () => {
    const dir = await tmpDir();
    const key = 'ms://demo/cjk@master';
    const message = 'no space left for 模型权重/分片-00001.safetensors in the store';
    const failed = modelStatus(key, 'failed', { attempts: 3, error: message, exitCode: 6, errorCode: 'ESF_NO_SPACE' });
    const d = await scriptedDaemon((req, res, send) => {
      if (req.method === 'POST') return send(202, modelStatus(key, 'downloading'));
      if (!req.url?.includes('/events')) return send(200, modelStatus(key, 'downloading'));
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.flushHeaders();
      const bytes = Buffer.from(`event: progress\ndata: ${JSON.stringify(failed)}\n\n`);
      // Two writes, the first ending inside the 3-byte "权": two network chunks.
      const cut = bytes.indexOf(Buffer.from('权')) + 1;
      res.write(bytes.subarray(0, cut));
      setTimeout(() => res.end(bytes.subarray(cut)), 50);
    });
    try {
      const r = await runCli(['init', key, ...storeArgs(dir), '--daemon', d.url], { env: hubEnv(undefined) });
      expect(r.stderr).toContain(message);
      expect(r.code).toBe(6);
      expect(r.stdout).toBe('');
    } finally {
      await d.close();
    }
  });
});

describe('init with a daemon that needs its API token', () => {
  const TOKEN = 'init-api-token-Hk2mW9';
  let daemon: Daemon;
  let dir: string;
  let tokenFile: string;
  beforeAll(async () => {
    dir = await tmpDir();
    tokenFile = join(dir, 'api-token');
    await fsp.writeFile(tokenFile, `${TOKEN}\n`);
    await hub.addRepo({ id: 'demo/authz', files: { 'config.json': '{"a":1}', 'model.safetensors': pattern(1024 * 1024, 12) } });
    const env = { ...process.env } as NodeJS.ProcessEnv;
    for (const [k, v] of Object.entries(hubEnv(hub))) if (v === undefined) delete env[k]; else env[k] = v;
    const config = parseConfig(
      `store: ${join(dir, 'store')}\nstateDir: ${join(dir, 'daemon-state')}\nlisten: 127.0.0.1:0\napi: { tokenFile: ${tokenFile} }\n`,
      join(dir, 'config.yaml'),
      { env },
    );
    daemon = await startDaemon(config, { env, logger: pino({ level: 'silent' }), resyncMs: 0 });
  });
  afterAll(async () => daemon?.stop());

  const args = (ref: string) => ['init', ref, '--store', join(dir, 'store'), '--state-dir', join(dir, 'init-state'), '--daemon', daemon.url];

  it('sends the token from --daemon-token-file and gets the model', async () => {
    const r = await runCli([...args('hf://demo/authz'), '--daemon-token-file', tokenFile], { env: hubEnv(undefined) });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`asked the daemon at ${daemon.url}`);
    await expectModel(r.stdout.trim(), { 'config.json': '{"a":1}', 'model.safetensors': pattern(1024 * 1024, 12) });
    expect(r.stdout + r.stderr).not.toContain(TOKEN);
  });

  it('without the token, or with a wrong one, exits 4 saying how to pass it, and does not pull by itself', async () => {
    // The hub is reachable: a fallback to pulling here would succeed, so exit 4 proves there was none.
    hub.resetStats();
    const none = await runCli(args('hf://demo/tiny'), { env: hubEnv(hub) });
    expect(none.code).toBe(4);
    expect(none.stderr).toMatch(/refused the request \(401: this route needs the API token.*\); pass its API token with --daemon-token-file or SWIFT_FETCH_API_TOKEN_FILE/);
    const wrongFile = join(dir, 'wrong-token');
    await fsp.writeFile(wrongFile, 'not-the-token\n');
    const wrong = await runCli(args('hf://demo/tiny'), { env: hubEnv(hub, { SWIFT_FETCH_API_TOKEN_FILE: wrongFile }) });
    expect(wrong.code).toBe(4);
    expect(wrong.stderr).toMatch(/401: the API token was not accepted.*check that --daemon-token-file/);
    expect(wrong.stderr).not.toContain('not-the-token');
    expect(hub.log).toEqual([]);
    expect(daemon.reconciler.get('hf://demo/tiny@main')).toBeUndefined();
  });

  it('a token file it cannot read is bad usage (exit 2)', async () => {
    const r = await runCli([...args('hf://demo/authz'), '--daemon-token-file', join(dir, 'missing')], { env: hubEnv(undefined) });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/cannot read --daemon-token-file .*missing: ENOENT/);
  });
});

/** Bind-mount `dir` read-only over itself (root only); the reason when it cannot. */
function mountReadOnly(dir: string): string | undefined {
  try {
    execFileSync('mount', ['--bind', dir, dir], { stdio: 'pipe' });
    onTestFinished(() => void execFileSync('umount', ['-l', dir], { stdio: 'pipe' }));
    execFileSync('mount', ['-o', 'remount,bind,ro', dir], { stdio: 'pipe' });
    return undefined;
  } catch (e) {
    return `cannot make a read-only bind mount (needs root / CAP_SYS_ADMIN): ${(e as Error).message.split('\n')[0]}`;
  }
}

describe('init that may not pull by itself (the chart\'s read-only inference pods)', () => {
  it('--no-self-pull: the daemon unreachable is exit 7 with a plain reason, and no hub is asked', async () => {
    const dir = await tmpDir();
    const port = await closedPort();
    hub.resetStats();
    // The hub is reachable and has the model: only --no-self-pull keeps init from fetching it.
    const r = await runCli(['init', 'hf://demo/tiny', ...storeArgs(dir), '--daemon', `http://127.0.0.1:${port}`, '--no-self-pull'], { env: hubEnv(hub) });
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/the daemon at http:\/\/127\.0\.0\.1:\d+ is unreachable \(ECONNREFUSED\) and self-pull is disabled \(--no-self-pull\): not pulling hf:\/\/demo\/tiny@main from a hub here/);
    expect(r.stdout).toBe('');
    expect(hub.log).toEqual([]);
    // Without a daemon to ask there is no way to get it at all: bad usage.
    const alone = await runCli(['init', 'hf://demo/tiny', ...storeArgs(dir), '--no-self-pull'], { env: hubEnv(hub) });
    expect(alone.code).toBe(2);
    expect(alone.stderr).toMatch(/no --daemon to ask, and self-pull is disabled/);
    expect(hub.log).toEqual([]);
  });

  it('a read-only store counts as no self-pull: exit 7 naming the read-only store; a model already there is still found', async (tc) => {
    const dir = await tmpDir();
    const store = join(dir, 'store');
    const first = await runCli(['pull', 'hf://demo/tiny', '--store', store, '--state-dir', join(dir, 'state'), '--quiet'], { env: hubEnv(hub) });
    expect(first.code).toBe(0);
    const why = mountReadOnly(store);
    if (why) {
      if (process.env.CI === 'true') throw new Error(`${why}; CI must run this test`);
      return tc.skip(why);
    }
    const port = await closedPort();
    hub.resetStats();
    const initArgs = ['--store', store, '--state-dir', join(dir, 'init-state'), '--daemon', `http://127.0.0.1:${port}`];
    const missing = await runCli(['init', 'hf://demo/daemon', ...initArgs], { env: hubEnv(hub) });
    expect(missing.code).toBe(7);
    expect(missing.stderr).toMatch(new RegExp(`is unreachable \\(ECONNREFUSED\\) and the store at ${store.replace(/[/.]/g, '\\$&')} is read-only \\(EROFS\\)`));
    expect(hub.log).toEqual([]);
    const there = await runCli(['init', 'hf://demo/tiny', ...initArgs], { env: hubEnv(undefined) });
    expect(there.code, there.stderr).toBe(0);
    expect(there.stdout.trim()).toBe(first.stdout.trim());
  });
});

describe.skipIf(OPENSSL_MISSING)('init with a daemon over https (skipped without openssl)', () => {
  it('trusts the daemon through --daemon-ca-file and --daemon-server-name; without them exits 4 and does not pull by itself', async () => {
    const dir = await tmpDir();
    const ca = makeCa(join(dir, 'pki'), 'ca');
    const leaf = makeCert(join(dir, 'pki'), ca, 'daemon', { dns: ['daemon.test'] });
    await hub.addRepo({ id: 'demo/tls', files: { 'config.json': '{"t":1}', 'model.safetensors': pattern(512 * 1024, 13) } });
    const env = { ...process.env } as NodeJS.ProcessEnv;
    for (const [k, v] of Object.entries(hubEnv(hub))) if (v === undefined) delete env[k]; else env[k] = v;
    const config = parseConfig(
      `store: ${join(dir, 'store')}\nstateDir: ${join(dir, 'daemon-state')}\nlisten: 127.0.0.1:0\ntls: { certFile: ${leaf.cert}, keyFile: ${leaf.key} }\n`,
      join(dir, 'config.yaml'),
      { env },
    );
    const d = await startDaemon(config, { env, logger: pino({ level: 'silent' }), resyncMs: 0 });
    try {
      expect(d.url).toMatch(/^https:/);
      const args = ['init', 'hf://demo/tls', '--store', join(dir, 'store'), '--state-dir', join(dir, 'init-state'), '--daemon', d.url];
      hub.resetStats();
      const untrusted = await runCli(args, { env: hubEnv(hub) });
      expect(untrusted.code).toBe(4);
      expect(untrusted.stderr).toMatch(/presented a certificate this client does not trust .*--daemon-ca-file/);
      expect(hub.log).toEqual([]);
      const r = await runCli([...args, '--daemon-ca-file', ca.cert], { env: hubEnv(undefined, { SWIFT_FETCH_DAEMON_SERVER_NAME: 'daemon.test' }) });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`asked the daemon at ${d.url}`);
      await expectModel(r.stdout.trim(), { 'config.json': '{"t":1}', 'model.safetensors': pattern(512 * 1024, 13) });
    } finally {
      await d.stop();
    }
  });
});
