import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTar, readTar } from '../bundle/helpers.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';

// Issue 12.4: a bundle whose config.json was altered (same size, git oid left out) imports, and a
// later online pull used to report alreadyComplete and keep the forged bytes: the hub gives small
// files only a git oid, and the check skipped it when the record had none. An online pull must
// check what the store holds against what the hub says now.

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const REAL = '{"model_type":"demo"}';
const FORGED = '{"model_type":"evil"}';
const FILES = { 'config.json': REAL, 'w.bin': 'w'.repeat(30_000) };

let hub: FakeHub;
beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'demo/forge', files: FILES });
});
afterAll(async () => hub?.close());

const env = (online: boolean) => ({
  HF_ENDPOINT: online ? hub.hfEndpoint : 'http://127.0.0.1:9',
  MODELSCOPE_ENDPOINT: online ? hub.msEndpoint : 'http://127.0.0.1:9',
  HF_TOKEN: undefined, MODELSCOPE_API_TOKEN: undefined, HTTPS_PROXY: undefined, HTTP_PROXY: undefined,
});

/** A real bundle of the repo, with config.json swapped for same-size bytes and its git oid removed. */
async function forgedBundle(dir: string): Promise<string> {
  const src = ['--store', join(dir, 'src'), '--state-dir', join(dir, 'src-state')];
  expect((await runCli(['pull', 'hf://demo/forge', ...src, '-q'], { env: env(true) })).code).toBe(0);
  const file = join(dir, 'real.tar');
  expect((await runCli(['bundle', 'create', 'hf://demo/forge', '-o', file, ...src], { env: env(false) })).code).toBe(0);
  const entries = await readTar(await fsp.readFile(file));
  const manifest = JSON.parse(entries[0]!.content.toString()) as {
    models: Array<{ files: Array<{ path: string; sha256: string; gitOid?: string }> }>;
    blobs: Array<{ sha256: string; size: number }>;
  };
  const cfg = manifest.models[0]!.files.find((f) => f.path === 'config.json')!;
  const old = cfg.sha256;
  cfg.sha256 = sha(FORGED);
  delete cfg.gitOid;
  for (const b of manifest.blobs) if (b.sha256 === old) b.sha256 = sha(FORGED);
  const forged = join(dir, 'forged.tar');
  await fsp.writeFile(
    forged,
    await buildTar([
      { name: entries[0]!.name, content: JSON.stringify(manifest) },
      ...entries.slice(1).map((e) => (e.name.endsWith(old) ? { name: e.name.replace(old, sha(FORGED)), content: FORGED } : { name: e.name, content: e.content })),
    ]),
  );
  return forged;
}

describe('an online pull checks the store against the hub', () => {
  it('replaces a forged same-size file imported from a bundle instead of reporting alreadyComplete', async () => {
    const dir = await tmpDir();
    const bundle = await forgedBundle(dir);
    const dst = ['--store', join(dir, 'dst'), '--state-dir', join(dir, 'dst-state')];
    const imported = await runCli(['bundle', 'import', bundle, ...dst], { env: env(false) });
    expect(imported.code, imported.stderr).toBe(0);
    const path = (await runCli(['path', 'hf://demo/forge', ...dst], { env: env(false) })).stdout.trim();
    expect(await fsp.readFile(join(path, 'config.json'), 'utf8')).toBe(FORGED); // the premise

    hub.resetStats();
    const r = await runCli(['pull', 'hf://demo/forge', ...dst, '--json'], { env: env(true) });
    expect(r.code, r.stderr).toBe(0);
    const done = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { alreadyComplete: boolean; path: string };
    expect(done.alreadyComplete).toBe(false);
    // Every view now holds the hub's bytes; the unchanged large file was not downloaded again.
    const hfSnap = join(dir, 'dst', 'huggingface', 'hub', 'models--demo--forge', 'snapshots', done.path.split('/').at(-1)!);
    for (const view of [done.path, hfSnap]) expect(await fsp.readFile(join(view, 'config.json'), 'utf8')).toBe(REAL);
    expect(hub.bytesSent({ path: 'w.bin' })).toBe(0);
    const ls = JSON.parse((await runCli(['ls', ...dst, '--json'], { env: env(false) })).stdout.trim()) as { ref: string };
    expect(ls.ref).toBe('hf://demo/forge');
    expect((await runCli(['verify', ...dst], { env: env(false) })).code).toBe(0);
  });

  it('a store that holds the hub content is still complete without a download', async () => {
    const dir = await tmpDir();
    const s = ['--store', join(dir, 's'), '--state-dir', join(dir, 'st')];
    expect((await runCli(['pull', 'hf://demo/forge', ...s, '-q'], { env: env(true) })).code).toBe(0);
    hub.resetStats();
    const r = await runCli(['pull', 'hf://demo/forge', ...s, '--json'], { env: env(true) });
    expect(JSON.parse(r.stdout.trim().split('\n').at(-1)!)).toMatchObject({ alreadyComplete: true, bytesDownloaded: 0 });
    expect(hub.bytesSent({ path: 'config.json' }) + hub.bytesSent({ path: 'w.bin' })).toBe(0);
  });
});
