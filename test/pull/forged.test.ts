import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gitBlobId } from '../../src/core/integrity.js';
import { Store } from '../../src/store/store.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';

// Issue 12.4: a bundle whose config.json was altered (same size, git oid left out) imported, and a
// later online pull used to report alreadyComplete and keep the forged bytes: the hub gives small
// files only a git oid, and the check skipped it when the record had none. An online pull must
// check what the store holds against what the hub says now.

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const REAL = '{"model_type":"demo"}';
const FORGED = '{"model_type":"evil"}';
const FILES = { 'config.json': REAL, 'w.bin': 'w'.repeat(30_000) };

let hub: FakeHub;
let repo: AddedRepo;
beforeAll(async () => {
  hub = await startFakeHub();
  repo = await hub.addRepo({ id: 'demo/forge', files: FILES });
});
afterAll(async () => hub?.close());

const env = (online: boolean) => ({
  HF_ENDPOINT: online ? hub.hfEndpoint : 'http://127.0.0.1:9',
  MODELSCOPE_ENDPOINT: online ? hub.msEndpoint : 'http://127.0.0.1:9',
  HF_TOKEN: undefined, MODELSCOPE_API_TOKEN: undefined, HTTPS_PROXY: undefined, HTTP_PROXY: undefined,
});

/**
 * A store holding the repo with config.json swapped for same-size bytes and no git oid in its
 * record. Older versions let a bundle import leave exactly this; bundles are now refused without
 * a git oid for such a file (test/bundle/digests.test.ts), so the forgery is written through the
 * store's own API: the pull must catch it however it got there.
 */
async function forgedStore(dir: string, commit: string): Promise<void> {
  const store = new Store(join(dir, 'dst'));
  await store.init();
  const files = [];
  for (const [path, content] of Object.entries({ ...FILES, 'config.json': FORGED })) {
    const tmp = join(dir, `tmp-${sha(content)}`);
    await fsp.writeFile(tmp, content);
    await store.commitBlob(tmp, sha(content));
    // Only the forged file lacks its git oid; the others keep theirs, as in the bundle this was.
    const gitOid = path === 'config.json' ? {} : { gitOid: gitBlobId(Buffer.from(content)) };
    files.push({ path, size: Buffer.byteLength(content), sha256: sha(content), ...gitOid, lfs: false, verified: true });
  }
  await store.publish({ key: { hub: 'hf', org: 'demo', name: 'forge' }, commit, revision: 'main', files, complete: true });
}

describe('an online pull checks the store against the hub', () => {
  it('replaces a forged same-size file (as an old bundle import left it) instead of reporting alreadyComplete', async () => {
    const dir = await tmpDir();
    await forgedStore(dir, repo.commit);
    const dst = ['--store', join(dir, 'dst'), '--state-dir', join(dir, 'dst-state')];
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
