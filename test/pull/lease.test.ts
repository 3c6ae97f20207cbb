import { createHash } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pullModel, type PullEvent } from '../../src/pull/index.js';
import { spawnNode } from '../daemon/helpers.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { tmpDir } from '../support/index.js';

let hub: FakeHub;
beforeAll(async () => {
  hub = await startFakeHub({ perConnectionRate: 512 * 1024 });
});
afterAll(async () => hub?.close());

describe('the download lease', () => {
  it('a pull whose lease is taken over stops with a storage error and publishes nothing', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024, 3);
    const repo = await hub.addRepo({ id: 'demo/slow', files: { 'model.safetensors': big, 'config.json': '{}' } });
    const dir = await tmpDir();
    const store = join(dir, 'store');
    const leaseFile = join(store, '.swift-fetch', 'leases', `hf--demo--slow@${repo.commit}.lease`);
    const env = { ...process.env, HF_ENDPOINT: hub.hfEndpoint, HF_TOKEN: '', HTTPS_PROXY: '', HTTP_PROXY: '' };
    const pulling = pullModel('hf://demo/slow', { store, stateDir: join(dir, 'state'), env, connections: 1, leaseTtlMs: 900 });
    // Once the download runs, another process "takes over": the lease file now names someone else.
    for (let i = 0; i < 200 && !existsSync(leaseFile); i++) await new Promise((r) => setTimeout(r, 25));
    expect(existsSync(leaseFile)).toBe(true);
    const now = Date.now();
    await fsp.writeFile(leaseFile, JSON.stringify({ holder: 'someone-else', host: 'elsewhere', pid: 1, acquiredAt: now, renewedAt: now, ttlMs: 60_000, nonce: 'x' }));
    await expect(pulling).rejects.toMatchObject({ code: 'ESF_LEASE_LOST', exitCode: 6 });
    expect(existsSync(join(store, 'models'))).toBe(false);
    expect(existsSync(join(store, 'huggingface', 'hub', 'models--demo--slow', 'snapshots'))).toBe(false);
  });
});

describe('a pull that ends early leaves no lease', () => {
  const leaseFiles = async (store: string) => (await fsp.readdir(join(store, '.swift-fetch', 'leases')).catch(() => [] as string[])).filter((f) => f.endsWith('.lease'));
  const pinDirs = async (store: string) => (await fsp.readdir(join(store, '.swift-fetch', 'partial')).catch(() => [] as string[])).filter((f) => f.startsWith('pin-'));

  it('a SIGKILLed pull frees the revision at once: the next pull takes over within a second and finishes', async () => {
    const big = Buffer.alloc(6 * 1024 * 1024, 7);
    await hub.addRepo({ id: 'demo/killed', files: { 'model.safetensors': big, 'config.json': '{"k":1}' } });
    const dir = await tmpDir();
    const store = join(dir, 'store');
    const stateDir = join(dir, 'state');
    const env = { ...process.env, HF_ENDPOINT: hub.hfEndpoint, HF_TOKEN: '', HTTPS_PROXY: '', HTTP_PROXY: '' };
    const barrier = join(dir, 'go');
    await fsp.writeFile(barrier, '');
    const first = spawnNode(['test/daemon/fixtures/pull-once.ts', 'hf://demo/killed', store, stateDir, barrier], { env });
    await first.waitLine((l) => l.includes('"type":"progress"') && !l.includes('"bytesDone":0,'), 'progress');
    expect(await leaseFiles(store)).not.toEqual([]);
    first.proc.kill('SIGKILL');
    await first.exited;

    // Its lease still says 30 s to go; a pull on this node sees the holder is gone.
    const events: Array<{ at: number; e: PullEvent }> = [];
    const res = await pullModel('hf://demo/killed', { store, stateDir, env, pollMs: 100, onEvent: (e) => events.push({ at: Date.now(), e }) });
    const resolved = events.find((x) => x.e.type === 'resolved')!.at;
    const moving = events.find((x) => x.e.type === 'progress')!.at;
    expect(events.filter((x) => x.e.type === 'waiting')).toEqual([]);
    expect(moving - resolved).toBeLessThan(1_000);
    expect(res.alreadyComplete).toBe(false);
    expect(createHash('sha256').update(await fsp.readFile(join(res.path, 'model.safetensors'))).digest('hex')).toBe(createHash('sha256').update(big).digest('hex'));
    expect(await leaseFiles(store)).toEqual([]);
  }, 120_000);

  it('an aborted pull (Ctrl-C, or `pull | head` closing stdout) releases its leases and pins', async () => {
    await hub.addRepo({ id: 'demo/aborted', files: { 'model.safetensors': Buffer.alloc(4 * 1024 * 1024, 9), 'config.json': '{}' } });
    const dir = await tmpDir();
    const store = join(dir, 'store');
    const env = { ...process.env, HF_ENDPOINT: hub.hfEndpoint, HF_TOKEN: '', HTTPS_PROXY: '', HTTP_PROXY: '' };
    const ac = new AbortController();
    let leasesWhileRunning: string[] = [];
    const pulling = pullModel('hf://demo/aborted', {
      store,
      stateDir: join(dir, 'state'),
      env,
      signal: ac.signal,
      onEvent: (e) => {
        if (e.type === 'progress' && e.bytesDone > 0 && !ac.signal.aborted) {
          void leaseFiles(store).then((l) => {
            leasesWhileRunning = l;
            ac.abort(new Error('stdout closed'));
          });
        }
      },
    });
    await expect(pulling).rejects.toThrow('stdout closed');
    expect(leasesWhileRunning.length).toBeGreaterThanOrEqual(2); // the revision's and the blob's
    expect(await leaseFiles(store)).toEqual([]);
    expect(await pinDirs(store)).toEqual([]);
  });
});
