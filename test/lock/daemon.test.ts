/** The daemon's `lockFile:` and `locked:`: a real daemon (in process), the fake hub, a real store. */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/core/errors.js';
import { parseConfig } from '../../src/daemon/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { Store } from '../../src/store/store.js';
import { hubEnv } from '../bundle/helpers.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';

let hub: FakeHub;
let locked: AddedRepo;
let dir: string;
let lockFile: string;

function processEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env } as NodeJS.ProcessEnv;
  for (const [k, v] of Object.entries(hubEnv(hub))) if (v === undefined) delete env[k]; else env[k] = v;
  return env;
}

function config(extra: string): ReturnType<typeof parseConfig> {
  return parseConfig(`store: ${join(dir, 'store')}\nstateDir: ${join(dir, 'state')}\nlisten: 127.0.0.1:0\n${extra}`, join(dir, 'config.yaml'), { env: processEnv() });
}

async function until<T>(fn: () => T | undefined, what: string, limitMs = 60_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() - start > limitMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  hub = await startFakeHub();
  locked = await hub.addRepo({ id: 'demo/pinned', files: { 'config.json': '{"v":1}', 'model.safetensors': Buffer.alloc(400_000, 1) } });
  await hub.addRepo({ id: 'demo/unlocked', files: { 'config.json': '{"u":1}' } });
  dir = await tmpDir();
  lockFile = join(dir, 'swift-fetch.lock');
  const r = await runCli(['lock', 'hf://demo/pinned', '-o', lockFile, '--store', join(dir, 'lock-store'), '--quiet'], { env: hubEnv(hub) });
  expect(r.code).toBe(0);
  // The branch moves after locking.
  const moved = await hub.addRepo({ id: 'demo/pinned', files: { 'config.json': '{"v":2}', 'model.safetensors': Buffer.alloc(400_000, 2) } });
  expect(moved.commit).not.toBe(locked.commit);
});
afterAll(async () => hub?.close());

describe('daemon lockFile', () => {
  let daemon: Daemon | undefined;
  afterAll(async () => daemon?.stop());

  it('keeps a declared model at its locked commit, and with locked: true fails a model the lock does not name (exit code 2)', async () => {
    daemon = await startDaemon(config(`lockFile: ${lockFile}\nlocked: true\nmodels: [hf://demo/pinned, hf://demo/unlocked]\n`), {
      env: processEnv(), logger: pino({ level: 'silent' }), resyncMs: 0, backoff: { baseMs: 60_000, maxMs: 60_000, slowBaseMs: 60_000, slowMaxMs: 60_000 },
    });
    const states = await until(() => {
      const list = daemon!.reconciler.list();
      return list.length === 2 && list.every((m) => m.state === 'ready' || m.state === 'failed') ? list : undefined;
    }, 'both models to settle');
    const pinned = states.find((m) => m.ref === 'hf://demo/pinned@main')!;
    expect(pinned).toMatchObject({ state: 'ready', commit: locked.commit });
    expect(await fsp.readFile(join(pinned.path!, 'config.json'), 'utf8')).toBe('{"v":1}');
    const unlocked = states.find((m) => m.ref === 'hf://demo/unlocked@main')!;
    expect(unlocked).toMatchObject({ state: 'failed', exitCode: ExitCode.usage, errorCode: 'ESF_NOT_LOCKED' });
    expect(unlocked.error).toMatch(/is not in the lock/);
    expect(hub.log.some((e) => e.url.includes('demo/unlocked'))).toBe(false);
    // The record says which lock the files were checked against.
    const rec = await new Store(join(dir, 'store')).readRecord({ hub: 'hf', org: 'demo', name: 'pinned' }, locked.commit);
    for (const f of rec!.files) expect(f.from?.lock?.file).toBe(lockFile);
  });

  it('after a failed pull serves only the locked commit from the store, never another revision of the model', async () => {
    const other = join(dir, 'other');
    // The store holds the branch's new commit (pulled without the lock); the hub is then unreachable.
    const pulled = await runCli(['pull', 'hf://demo/pinned', '--store', join(other, 'store'), '--state-dir', join(other, 'state'), '--quiet'], { env: hubEnv(hub) });
    expect(pulled.stdout.trim()).not.toContain(locked.commit);
    const cfg = parseConfig(`store: ${join(other, 'store')}\nstateDir: ${join(other, 'state')}\nlisten: 127.0.0.1:0\nlockFile: ${lockFile}\nmodels: [hf://demo/pinned]\n`, join(other, 'c.yaml'), { env: {} });
    const env = { ...processEnv(), ...hubEnv(undefined) } as NodeJS.ProcessEnv;
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
    const d = await startDaemon(cfg, { env, logger: pino({ level: 'silent' }), resyncMs: 0, backoff: { baseMs: 60_000, maxMs: 60_000, slowBaseMs: 60_000, slowMaxMs: 60_000 } });
    try {
      const m = await until(() => d.reconciler.list().find((x) => x.state === 'ready' || x.state === 'failed'), 'the model to settle', 120_000);
      expect(m).toMatchObject({ state: 'failed', exitCode: ExitCode.network, commit: null });
    } finally {
      await d.stop();
    }
  }, 180_000);

  it('init --lock asks a daemon that has no lock for the locked commit, and checks what it publishes against the lock', async () => {
    const other = join(dir, 'plain-daemon');
    const cfg = parseConfig(`store: ${join(other, 'store')}\nstateDir: ${join(other, 'state')}\nlisten: 127.0.0.1:0\n`, join(other, 'c.yaml'), { env: {} });
    const d = await startDaemon(cfg, { env: processEnv(), logger: pino({ level: 'silent' }), resyncMs: 0 });
    try {
      const r = await runCli(['init', 'hf://demo/pinned', '--lock', lockFile, '--daemon', d.url, '--no-self-pull', '--store', join(other, 'store'), '--state-dir', join(other, 'init-state')], { env: hubEnv(hub) });
      expect(r.stderr).toMatch(/asked the daemon/);
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe(join(other, 'store', 'models', 'hf', 'demo', 'pinned', locked.commit));
      expect(d.reconciler.list().map((m) => m.ref)).toEqual([`hf://demo/pinned@${locked.commit}`]);
      // A lock that says other bytes than the daemon published: exit 5, naming the file.
      const lock = JSON.parse(await fsp.readFile(lockFile, 'utf8')) as { models: Array<{ files: Array<{ path: string; sha256: string }> }> };
      lock.models[0]!.files.find((f) => f.path === 'config.json')!.sha256 = 'e'.repeat(64);
      const wrong = join(other, 'wrong.lock');
      await fsp.writeFile(wrong, JSON.stringify(lock));
      const bad = await runCli(['init', 'hf://demo/pinned', '--lock', wrong, '--daemon', d.url, '--no-self-pull', '--store', join(other, 'store'), '--state-dir', join(other, 'init-state'), '--quiet'], { env: hubEnv(hub) });
      expect(bad.code).toBe(5);
      expect(bad.stderr).toMatch(/differs from the lock .*wrong\.lock: config\.json: sha256:e{64} \(7 bytes\) in the lock, sha256:[0-9a-f]{64} \(7 bytes\) in the store/);
    } finally {
      await d.stop();
    }
  });

  it('refuses to start with a lock that is missing (3) or invalid (2), a trust key that is not one (2), or locked without a lock (2)', async () => {
    const bad = join(dir, 'bad.lock');
    await fsp.writeFile(bad, '{"lockfileVersion":1,"models":[{"ref":"hf://a/b@main"}]}');
    await expect(startDaemon(config(`lockFile: ${bad}\n`), { env: processEnv(), logger: pino({ level: 'silent' }) })).rejects.toMatchObject({ exitCode: 2, message: expect.stringMatching(/invalid lock file .*bad\.lock: models\[0\]\.hub/) });
    await expect(startDaemon(config(`lockFile: ${join(dir, 'none.lock')}\n`), { env: processEnv(), logger: pino({ level: 'silent' }) })).rejects.toMatchObject({ exitCode: 3 });
    await expect(startDaemon(config(`imports: {dir: ${join(dir, 'imports')}, trust: [${lockFile}]}\n`), { env: processEnv(), logger: pino({ level: 'silent' }) }))
      .rejects.toMatchObject({ exitCode: 2, message: expect.stringMatching(/^imports\.trust .*swift-fetch\.lock: not a PEM public key/) });
    expect(() => config('locked: true\n')).toThrow(/locked: true needs lockFile/);
  });
});
