import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pullModel } from '../../src/pull/index.js';
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
