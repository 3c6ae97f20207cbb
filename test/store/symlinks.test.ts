import { createHash } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { readTree, runCli, tmpDir } from '../support/index.js';

// The store never makes a symbolic link on a folder path, so one found there was planted (or left
// by something else); following it would write views or blobs outside the store. And a file in a
// view is trusted for what it is, not for its name.

const FILES = { 'config.json': '{"model_type":"demo"}', 'sub/tok.json': '{"t":1}', 'w.bin': 'w'.repeat(40_000) };
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
let hub: FakeHub;
let commit: string;
beforeAll(async () => {
  hub = await startFakeHub();
  commit = (await hub.addRepo({ id: 'demo/links', files: FILES })).commit;
});
afterAll(async () => hub?.close());

const env = () => ({ HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: undefined, MODELSCOPE_API_TOKEN: undefined, HTTPS_PROXY: undefined, HTTP_PROXY: undefined });

async function setup() {
  const dir = await tmpDir();
  const store = join(dir, 'store');
  const outside = join(dir, 'outside');
  await fsp.mkdir(outside, { recursive: true });
  await fsp.writeFile(join(outside, 'keep.txt'), 'mine');
  const pull = (ref = 'hf://demo/links') => runCli(['pull', ref, '--store', store, '--state-dir', join(dir, 'state'), '-q'], { env: env() });
  return { dir, store, outside, pull };
}

async function plant(link: string, target: string) {
  await fsp.mkdir(join(link, '..'), { recursive: true });
  await fsp.symlink(target, link);
}

describe('links planted inside the store are never followed', () => {
  it.each([
    ['the plain view org folder', (s: string) => join(s, 'models', 'hf', 'demo')],
    ['the HF repo folder', (s: string) => join(s, 'huggingface', 'hub', 'models--demo--links')],
    ['the blob store', (s: string) => join(s, '.swift-fetch', 'blobs')],
    ['a snapshot folder', (s: string) => join(s, 'models', 'hf', 'demo', 'links', commit)],
    ['the HF snapshot folder', (s: string) => join(s, 'huggingface', 'hub', 'models--demo--links', 'snapshots', commit)],
  ])('%s: the pull refuses with exit 6 naming the link, and writes nothing through it', async (_what, at) => {
    const s = await setup();
    const link = at(s.store);
    await plant(link, s.outside);
    const r = await s.pull();
    expect(r.code).toBe(6);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(link);
    expect(r.stderr).toMatch(/symbolic link the store did not make/);
    expect([...(await readTree(s.outside)).keys()]).toEqual(['keep.txt']);
  });

  it('the store root itself may be a link (that is where the user put the store)', async () => {
    const s = await setup();
    const real = join(s.dir, 'real-store');
    await fsp.mkdir(real);
    await fsp.symlink(real, s.store);
    const r = await s.pull();
    expect(r.code).toBe(0);
    expect(existsSync(join(real, 'models', 'hf', 'demo', 'links', commit, 'config.json'))).toBe(true);
  });

  it('a view file replaced by a link (or by other bytes) is put back by the next pull; its target is left alone', async () => {
    const s = await setup();
    expect((await s.pull()).code).toBe(0);
    const plainCfg = join(s.store, 'models', 'hf', 'demo', 'links', commit, 'config.json');
    const hfCfg = join(s.store, 'huggingface', 'hub', 'models--demo--links', 'snapshots', commit, 'config.json');
    const tok = join(s.store, 'models', 'hf', 'demo', 'links', commit, 'sub', 'tok.json');
    const lure = join(s.outside, 'lure.json');
    await fsp.writeFile(lure, '{"model_type":"evil"}');
    for (const p of [plainCfg, hfCfg]) {
      await fsp.rm(p);
      await fsp.symlink(lure, p);
    }
    await fsp.rm(tok);
    await fsp.writeFile(tok, '{"t":2}');

    expect((await s.pull()).code).toBe(0);
    for (const p of [plainCfg, hfCfg]) expect(sha(await fsp.readFile(p))).toBe(sha(FILES['config.json']));
    expect((await fsp.lstat(plainCfg)).isSymbolicLink()).toBe(false);
    expect(await fsp.readlink(hfCfg)).not.toContain(s.outside);
    expect(sha(await fsp.readFile(tok))).toBe(sha(FILES['sub/tok.json']));
    expect(await fsp.readFile(lure, 'utf8')).toBe('{"model_type":"evil"}');
  });

  it('a sweep never deletes through a linked blob store', async () => {
    const s = await setup();
    expect((await s.pull()).code).toBe(0);
    // Move the blob store out and link it back: every blob is now outside, unreferenced once rm'd.
    const blobs = join(s.store, '.swift-fetch', 'blobs');
    const moved = join(s.outside, 'blobs');
    await fsp.rename(blobs, moved);
    await fsp.symlink(moved, blobs);
    const before = [...(await readTree(moved)).keys()].sort();
    expect(before.length).toBeGreaterThan(0);
    const rm = await runCli(['rm', 'hf://demo/links', '--store', s.store, '--state-dir', join(s.dir, 'state')], { env: env() });
    expect(rm.code).toBe(0);
    const gc = await runCli(['gc', '--store', s.store], { env: env() });
    expect(gc.code).toBe(0);
    expect([...(await readTree(moved)).keys()].sort()).toEqual(before);
  });
});
