/**
 * A bundle carries a digest for every file (issue 12, item 4, bundle side): the SHA-256 always,
 * and for Hugging Face files kept in git the git blob id, the only hash the Hub lists for them.
 * Real stores, real tar files, the built CLI.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';
import { assertNothingPublished, hubEnv, pattern, readTar, rewriteBundle, sha, storeArgs, type BundleManifestJson } from './helpers.js';

const REAL = '{"model_type":"demo"}';
const FORGED = '{"model_type":"evil"}'; // same size: a size check alone cannot see it
const FILES = { 'config.json': REAL, 'model.safetensors': pattern(200_000, 3) };

let hub: FakeHub;
let work: string;
let src: string[];
let real: string;
beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'demo/digests', files: FILES });
  work = await tmpDir('sf-digests-');
  src = storeArgs(work, 'src');
  expect((await runCli(['pull', 'hf://demo/digests', ...src, '-q'], { env: hubEnv(hub) })).code).toBe(0);
  real = join(work, 'real.tar');
  const r = await runCli(['bundle', 'create', 'hf://demo/digests', '-o', real, ...src, '--quiet'], { env: hubEnv(undefined) });
  expect(r.code, r.stderr).toBe(0);
});
afterAll(async () => hub?.close());

async function importInto(file: string): Promise<{ code: number | null; stderr: string; store: string }> {
  const dir = await tmpDir();
  const r = await runCli(['bundle', 'import', file, ...storeArgs(dir)], { env: hubEnv(undefined) });
  return { code: r.code, stderr: r.stderr, store: join(dir, 'store') };
}

/** config.json's manifest entry and blob entry name. */
function configOf(m: BundleManifestJson) {
  return m.models[0]!.files.find((f) => f.path === 'config.json')!;
}

/** The real bundle with config.json swapped for FORGED and its SHA-256 recomputed everywhere; its git id kept or dropped. */
async function forgeConfig(name: string, o: { keepGitOid: boolean }): Promise<string> {
  const forged = join(work, name);
  await rewriteBundle(real, forged, (m, blobs) => {
    const cfg = configOf(m);
    const old = cfg.sha256!;
    cfg.sha256 = sha(FORGED);
    if (!o.keepGitOid) delete cfg.gitOid;
    for (const b of m.blobs) if (b.sha256 === old) b.sha256 = sha(FORGED);
    blobs.delete(`blobs/sha256/${old}`);
    blobs.set(`blobs/sha256/${sha(FORGED)}`, Buffer.from(FORGED));
  });
  return forged;
}

describe('bundle digests', () => {
  it('create writes a SHA-256 for every file, and the git blob id for every file kept in git', async () => {
    const manifest = JSON.parse((await readTar(await fsp.readFile(real)))[0]!.content.toString()) as BundleManifestJson;
    const files = manifest.models[0]!.files;
    expect(files.map((f) => f.path).sort()).toEqual(Object.keys(FILES).sort());
    for (const f of files) expect(f.sha256).toBe(sha(FILES[f.path as keyof typeof FILES]));
    expect(configOf(manifest).gitOid).toMatch(/^[0-9a-f]{40}$/);
    expect(manifest.blobs.every((b) => /^[0-9a-f]{64}$/.test(b.sha256 ?? ''))).toBe(true);
  });

  it('a small file altered to same-size bytes with its git id removed never lands (exit 5)', async () => {
    const forged = await forgeConfig('forged.tar', { keepGitOid: false });
    const r = await importInto(forged);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/config\.json.*no git blob id/);
    await assertNothingPublished(r.store);
    expect((await runCli(['bundle', 'verify', forged], { env: hubEnv(undefined) })).code).toBe(5);
  });

  it('the same forgery keeping the real git id fails that id (exit 5)', async () => {
    const forged = await forgeConfig('forged-git.tar', { keepGitOid: true });
    const r = await importInto(forged);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/git blob id/);
    await assertNothingPublished(r.store);
  });

  it('a manifest without a file SHA-256, or a blob SHA-256, is refused with exit 5', async () => {
    const noFileSha = join(work, 'no-file-sha.tar');
    await rewriteBundle(real, noFileSha, (m) => {
      delete m.models[0]!.files.find((f) => f.path === 'model.safetensors')!.sha256;
    });
    const a = await importInto(noFileSha);
    expect(a.code, a.stderr).toBe(5);
    expect(a.stderr).toMatch(/model\.safetensors.*no SHA-256/);
    await assertNothingPublished(a.store);

    const noBlobSha = join(work, 'no-blob-sha.tar');
    await rewriteBundle(real, noBlobSha, (m) => {
      delete m.blobs[0]!.sha256;
    });
    const b = await importInto(noBlobSha);
    expect(b.code, b.stderr).toBe(5);
    await assertNothingPublished(b.store);
  });

  it('create refuses a store record that lacks a git id, and leaves no bundle behind', async () => {
    const dir = await tmpDir();
    const args = storeArgs(dir);
    expect((await runCli(['pull', 'hf://demo/digests', ...args, '-q'], { env: hubEnv(hub) })).code).toBe(0);
    // A record as an import of an older, forgeable bundle left it.
    const recDir = join(dir, 'store', '.swift-fetch', 'records', 'hf--demo--digests');
    const [recFile] = (await fsp.readdir(recDir)).filter((n) => n.endsWith('.json'));
    const rec = JSON.parse(await fsp.readFile(join(recDir, recFile!), 'utf8')) as { files: Array<{ path: string; gitOid?: string }> };
    delete rec.files.find((f) => f.path === 'config.json')!.gitOid;
    await fsp.writeFile(join(recDir, recFile!), JSON.stringify(rec));
    const out = join(dir, 'out.tar');
    const r = await runCli(['bundle', 'create', 'hf://demo/digests', '-o', out, ...args], { env: hubEnv(undefined) });
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/config\.json.*pull .* again/);
    expect((await fsp.readdir(dir)).filter((n) => n.startsWith('out.tar'))).toEqual([]);
  });
});
