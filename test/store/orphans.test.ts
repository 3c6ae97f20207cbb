import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ownIdentity } from '../../src/state/host.js';
import { tryAcquireLease } from '../../src/store/lease.js';
import { Store } from '../../src/store/store.js';
import { runGc } from '../../src/store/gc.js';
import { spawnNode, type Child } from '../daemon/helpers.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';

// A SIGKILLed pull leaves partial/pin-* (a second link to every blob it used) and a publish cut
// short leaves tmp/stage-*: GC removes those whose maker is dead, and only those (issue 12.5).

const WORK = 'test/store/fixtures/work-dir.ts';
let hub: FakeHub;
beforeAll(async () => {
  hub = await startFakeHub({ perConnectionRate: 256 * 1024 });
});
afterAll(async () => hub?.close());

const children: Child[] = [];
const kill = async (c: Child) => {
  if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
  await c.exited;
};
afterAll(async () => Promise.all(children.map(kill)));

async function workDir(store: string, kind: 'pin' | 'stage', hold = false): Promise<{ dir: string; child: Child }> {
  const child = spawnNode([WORK, store, kind, ...(hold ? ['hold'] : [])]);
  children.push(child);
  const dir = await child.waitLine((l) => l.startsWith('/'), 'the folder');
  if (!hold) await child.exited;
  return { dir, child };
}

const pins = async (store: string) => (await fsp.readdir(join(store, '.swift-fetch', 'partial')).catch(() => [] as string[])).filter((f) => f.startsWith('pin-'));

describe('GC and the work folders of dead processes', () => {
  it('removes the pin folder of a SIGKILLed pull, so rm + gc free what only it held (through the CLI)', async () => {
    const small = { 'a.json': '{"a":1}', 'b.json': '{"b":2}' };
    await hub.addRepo({ id: 'demo/orphan-a', files: small });
    await hub.addRepo({ id: 'demo/orphan-b', files: { ...small, 'model.safetensors': Buffer.alloc(3 * 1024 * 1024, 5) } });
    const dir = await tmpDir();
    const store = join(dir, 'store');
    const args = ['--store', store, '--state-dir', join(dir, 'state')];
    const env = { HF_ENDPOINT: hub.hfEndpoint, HF_TOKEN: undefined, HTTPS_PROXY: undefined, HTTP_PROXY: undefined };
    expect((await runCli(['pull', 'hf://demo/orphan-a', ...args, '-q'], { env })).code).toBe(0);
    // B shares a.json and b.json: its pull pins them at once, then downloads the big file - and is killed.
    const barrier = join(dir, 'go');
    await fsp.writeFile(barrier, '');
    const pull = spawnNode(['test/daemon/fixtures/pull-once.ts', 'hf://demo/orphan-b', store, join(dir, 'state'), barrier], { env: { ...process.env, ...env, HF_TOKEN: '', HTTPS_PROXY: '', HTTP_PROXY: '' } });
    children.push(pull);
    await pull.waitLine((l) => l.includes('"type":"progress"'), 'progress');
    await kill(pull);
    const left = await pins(store);
    expect(left).toHaveLength(1);
    const pinned = (await fsp.readdir(join(store, '.swift-fetch', 'partial', left[0]!))).filter((f) => f !== '.owner');
    expect(pinned).toHaveLength(2);

    // A removed, its blobs are held by the dead pull's pins alone: rm cannot free them.
    const rm = await runCli(['rm', 'hf://demo/orphan-a', ...args, '--json']);
    expect(JSON.parse(rm.stdout)).toMatchObject({ freedBlobs: 0 });

    const dry = await runCli(['gc', ...args, '--dry-run', '--json']);
    expect(dry.code).toBe(0);
    expect((JSON.parse(dry.stdout) as { orphans: string[] }).orphans).toEqual([join(store, '.swift-fetch', 'partial', left[0]!)]);
    expect(await pins(store)).toEqual(left);

    const gc = await runCli(['gc', ...args, '--json']);
    expect(gc.code).toBe(0);
    expect((JSON.parse(gc.stdout) as { orphans: string[] }).orphans).toHaveLength(1);
    expect(await pins(store)).toEqual([]);
    // Nothing links those blobs any more: past the sweep's grace period they are freed.
    const s = new Store(store);
    for (const sha of pinned) expect((await fsp.stat(s.blobPath(sha))).nlink).toBe(1);
    expect((await s.sweepBlobs({ graceMs: 0 })).freedBlobs).toBe(2);
  }, 120_000);

  it("leaves a live process's folders alone and removes a dead one's", async () => {
    const store = join(await tmpDir(), 'store');
    const live = await workDir(store, 'pin', true);
    const livingStage = await workDir(store, 'stage', true);
    const dead = await workDir(store, 'pin');
    const deadStage = await workDir(store, 'stage');
    const res = await runGc(new Store(store), { maxBytes: 0 });
    expect(res.orphans.sort()).toEqual([dead.dir, deadStage.dir].sort());
    for (const d of [live.dir, livingStage.dir]) expect(existsSync(d)).toBe(true);
    for (const d of [dead.dir, deadStage.dir]) expect(existsSync(d)).toBe(false);
    await kill(live.child);
    expect((await runGc(new Store(store), { maxBytes: 0 })).orphans).toEqual([live.dir]);
  }, 60_000);

  it('a maker whose pid cannot be judged here: a pin folder goes once its revision lease is no longer held', async () => {
    const store = new Store(join(await tmpDir(), 'store'));
    await store.init();
    const lease = await tryAcquireLease(store.leaseDir, 'hf--o--n@c', { holder: 'elsewhere' });
    const dir = await store.makeWorkDir('pin', 'hf--o--n@c');
    // As another node would have written it: another boot, so its pid means nothing here.
    const me = ownIdentity();
    await fsp.writeFile(join(dir, '.owner'), JSON.stringify({ host: me.host, pid: me.pid, boot: 'another-boot', pidns: me.pidns, pidStart: me.pidStart, lease: 'hf--o--n@c', createdAt: Date.now() }));
    expect((await runGc(store, { maxBytes: 0 })).orphans).toEqual([]);
    await lease!.release();
    expect((await runGc(store, { maxBytes: 0 })).orphans).toEqual([dir]);
  });

  it('a folder without an owner (an older version made it) is left alone', async () => {
    const store = new Store(join(await tmpDir(), 'store'));
    await store.init();
    const old = join(store.partialDir, 'pin-host_123-99999');
    await fsp.mkdir(old);
    expect((await runGc(store, { maxBytes: 0 })).orphans).toEqual([]);
    expect(existsSync(old)).toBe(true);
  });
});
