import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gitBlobId } from '../../src/core/integrity.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { cliPath, pythonEnv, readTree, requirePython, run, runCli, runPython, skipWithoutPython, tmpDir } from '../support/index.js';
import { assertNothingPublished, buildTar, hubEnv, listTree, pattern, readTar, sha, storeArgs, type TarEntry } from './helpers.js';

let hub: FakeHub;
let tiny: AddedRepo;
const big = pattern(2 * 1024 * 1024 + 333, 7);
const FILES: Record<string, Buffer | string> = {
  'config.json': '{"model_type":"demo"}',
  'nested/dir/tokenizer.json': '{"tok":true}',
  'model.safetensors': big,
  // Same content as config.json: one blob in the bundle for two files.
  'copy-of-config.json': '{"model_type":"demo"}',
};
const OTHER: Record<string, Buffer | string> = {
  'config.json': '{"model_type":"demo"}', // shared with demo/tiny: stored once across repos
  'weights.bin': pattern(300_000, 99),
};

/** Distinct contents over both repos (config.json is shared by three files in two repos). */
const DISTINCT = new Set([...Object.values(FILES), ...Object.values(OTHER)].map((c) => sha(c))).size;

/** One bundle made from a pulled store, shared by the read-only tests below. */
let work: string;
let bundlePath: string;
let sourceStore: string[];

function tarAvailable(): boolean {
  return spawnSync('tar', ['--version']).status === 0;
}

beforeAll(async () => {
  hub = await startFakeHub();
  tiny = await hub.addRepo({ id: 'demo/tiny', files: FILES });
  await hub.addRepo({ id: 'demo/other', files: OTHER });
  work = await tmpDir('sf-bundle-');
  sourceStore = storeArgs(work, 'src');
  const pulled = await runCli(['pull', 'hf://demo/tiny', 'ms://demo/other', ...sourceStore, '--quiet'], { env: hubEnv(hub) });
  expect(pulled.stderr).toBe('');
  expect(pulled.code).toBe(0);
  bundlePath = join(work, 'models.tar');
  const created = await runCli(['bundle', 'create', 'hf://demo/tiny', 'ms://demo/other', '-o', bundlePath, ...sourceStore, '--json'], {
    env: hubEnv(undefined), // the store has both: creating a bundle needs no network
  });
  expect(created.stderr).toBe('');
  expect(created.code).toBe(0);
  expect(JSON.parse(created.stdout)).toMatchObject({ type: 'bundle-created', pulled: [] });
});
afterAll(async () => hub?.close());

describe('bundle create', () => {
  it('writes one standard tar: the manifest first, then each distinct blob once', async () => {
    const entries = await readTar(await fsp.readFile(bundlePath));
    expect(entries[0]!.name).toBe('swift-fetch-bundle.json');
    const manifest = JSON.parse(entries[0]!.content.toString()) as {
      format: string; version: number; models: Array<{ hub: string; org: string; name: string; revision: string; commit: string; files: Array<{ path: string; sha256: string; size: number }> }>;
      blobs: Array<{ sha256: string; size: number }>;
    };
    expect(manifest).toMatchObject({ format: 'swift-fetch-bundle', version: 1 });
    expect(manifest.models.map((m) => `${m.hub}://${m.org}/${m.name}@${m.revision}`)).toEqual(['hf://demo/tiny@main', 'ms://demo/other@master']);
    expect(manifest.models[0]!.commit).toBe(tiny.commit);
    const distinct = new Set([...Object.values(FILES), ...Object.values(OTHER)].map((c) => sha(c)));
    expect(entries.slice(1).map((e) => e.name).sort()).toEqual([...distinct].map((s) => `blobs/sha256/${s}`).sort());
    for (const e of entries.slice(1)) {
      expect(e.type).toBe('file');
      expect(sha(e.content)).toBe(e.name.slice('blobs/sha256/'.length));
    }
    const tinyFiles = Object.fromEntries(manifest.models[0]!.files.map((f) => [f.path, f.sha256]));
    expect(tinyFiles).toEqual(Object.fromEntries(Object.entries(FILES).map(([p, c]) => [p, sha(c)])));
  });

  it('is listed by the system tar', async (ctx) => {
    if (!tarAvailable()) {
      if (process.env.CI === 'true') throw new Error('tar is required in CI');
      ctx.skip(); // no tar binary on this machine
    }
    const r = spawnSync('tar', ['-tf', bundlePath], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const names = r.stdout.trim().split('\n');
    expect(names[0]).toBe('swift-fetch-bundle.json');
    expect(names.length).toBe(1 + DISTINCT);
  });

  it('pulls first what the store lacks, and streams to stdout with -o -', async () => {
    const dir = await tmpDir();
    const args = storeArgs(dir);
    const file = join(dir, 'from-stdout.tar');
    hub.resetStats();
    const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
    const r = await run('sh', ['-c', [process.execPath, cliPath, 'bundle', 'create', 'hf://demo/tiny', '-o', '-', ...args, '--quiet'].map(q).join(' ') + ` > ${q(file)}`], {
      env: hubEnv(hub),
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(hub.bytesSent()).toBeGreaterThan(big.length); // it had to download first
    const entries = await readTar(await fsp.readFile(file));
    expect(entries[0]!.name).toBe('swift-fetch-bundle.json');
    expect(entries.some((e) => e.name === `blobs/sha256/${sha(big)}`)).toBe(true);
    const v = await runCli(['bundle', 'verify', file]);
    expect(v.code).toBe(0);
  });

  it('refuses a ref the store lacks when the hub is unreachable, and leaves no file behind', async () => {
    const dir = await tmpDir();
    const out = join(dir, 'x.tar');
    const r = await runCli(['bundle', 'create', 'hf://demo/tiny', '-o', out, ...storeArgs(dir)], { env: hubEnv(undefined) });
    expect(r.code).toBe(7);
    expect(await fsp.readdir(dir).then((l) => l.filter((n) => n.startsWith('x.tar')))).toEqual([]);
  });
});

describe('bundle verify', () => {
  it('accepts a good bundle without a store', async () => {
    const r = await runCli(['bundle', 'verify', bundlePath, '--json'], { env: { SWIFT_FETCH_STORE: '/nonexistent/store' } });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ type: 'verified', blobs: DISTINCT });
    expect(existsSync('/nonexistent/store')).toBe(false);
  });
});

describe('bundle import', () => {
  it('round-trips into an empty store with no network; importing twice is harmless', async () => {
    const dir = await tmpDir();
    const args = storeArgs(dir);
    const env = hubEnv(undefined);
    hub.resetStats();
    const r = await runCli(['bundle', 'import', bundlePath, ...args, '--json'], { env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; ref?: string; path?: string; blobsWritten?: number });
    expect(lines.at(-1)).toMatchObject({ type: 'done', models: 2, blobsWritten: DISTINCT, blobsPresent: 0 });
    const tinyPath = lines.find((l) => l.ref === 'hf://demo/tiny@main')!.path!;
    const tree = await readTree(tinyPath);
    expect([...tree.keys()].sort()).toEqual(Object.keys(FILES).sort());
    for (const [p, c] of Object.entries(FILES)) expect(sha(tree.get(p)!)).toBe(sha(c));

    // `path` answers offline with the branch name, as after a pull.
    const p = await runCli(['path', 'hf://demo/tiny@main', ...args], { env });
    expect(p.code).toBe(0);
    expect(p.stdout.trim()).toBe(tinyPath);
    const p2 = await runCli(['path', 'ms://demo/other', ...args], { env });
    expect(p2.code).toBe(0);
    // The HF cache view is there too (huggingface_hub reads it offline).
    const hfRef = await fsp.readFile(join(dir, 'store', 'huggingface', 'hub', 'models--demo--tiny', 'refs', 'main'), 'utf8');
    expect(hfRef).toBe(tiny.commit);
    // The store's own verify re-hashes what was imported.
    const v = await runCli(['verify', ...args], { env });
    expect(v.code).toBe(0);

    const again = await runCli(['bundle', 'import', bundlePath, ...args, '--json'], { env });
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout.trim().split('\n').at(-1)!)).toMatchObject({ type: 'done', blobsWritten: 0, blobsPresent: DISTINCT });
    expect((await readTree(tinyPath)).size).toBe(Object.keys(FILES).length);
    expect(hub.log).toEqual([]); // nothing ever talked to a hub
    // No staging leftovers.
    expect(await fsp.readdir(join(dir, 'store', '.swift-fetch', 'partial'))).toEqual([]);
  });

  it.skipIf(skipWithoutPython())('the real huggingface_hub and modelscope clients read an imported store offline', async () => {
    requirePython();
    const dir = await tmpDir();
    const r = await runCli(['bundle', 'import', bundlePath, ...storeArgs(dir)], { env: hubEnv(undefined) });
    expect(r.code).toBe(0);
    const store = join(dir, 'store');
    const HASHES = 'import hashlib, json, os, sys\nroot = sys.argv[1]\nout = {}\nfor d, _, fs in os.walk(root):\n    for f in fs:\n        p = os.path.join(d, f)\n        out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()\nprint(json.dumps(out))';
    const hf = await runPython(`import sys\nfrom huggingface_hub import snapshot_download\nprint(snapshot_download(sys.argv[1]))`, ['demo/tiny'], {
      env: pythonEnv({ HF_HOME: join(store, 'huggingface'), HF_HUB_OFFLINE: '1' }),
    });
    expect(hf.stderr).not.toMatch(/Traceback/);
    expect(hf.code).toBe(0);
    const snap = hf.stdout.trim().split('\n').at(-1)!;
    expect(snap).toBe(join(store, 'huggingface', 'hub', 'models--demo--tiny', 'snapshots', tiny.commit));
    const h1 = await runPython(HASHES, [snap]);
    expect(JSON.parse(h1.stdout)).toEqual(Object.fromEntries(Object.entries(FILES).map(([p, c]) => [p, sha(c)])));
    const ms = await runPython(`import sys\nfrom modelscope import snapshot_download\nprint(snapshot_download(sys.argv[1], local_files_only=True))`, ['demo/other'], {
      env: pythonEnv({ MODELSCOPE_CACHE: join(store, 'modelscope') }),
    });
    expect(ms.stderr).not.toMatch(/Traceback/);
    expect(ms.code).toBe(0);
    const msDir = ms.stdout.trim().split('\n').at(-1)!;
    expect(msDir.startsWith(join(store, 'modelscope'))).toBe(true);
    const h2 = await runPython(HASHES, [msDir]);
    expect(JSON.parse(h2.stdout)).toEqual(Object.fromEntries(Object.entries(OTHER).map(([p, c]) => [p, sha(c)])));
  });

  it('reads a bundle from stdin', async () => {
    const dir = await tmpDir();
    const r = await runCli(['bundle', 'import', '-', ...storeArgs(dir)], { env: hubEnv(undefined), input: await fsp.readFile(bundlePath) });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('hf://demo/tiny@main ');
  });

  it('a flipped byte in a blob: exit 5 from verify and import, nothing published', async () => {
    const dir = await tmpDir();
    const buf = Buffer.from(await fsp.readFile(bundlePath));
    const at = buf.indexOf(big.subarray(1000, 1064));
    expect(at).toBeGreaterThan(0);
    buf[at + 10] = buf[at + 10]! ^ 0x01;
    const bad = join(dir, 'tampered.tar');
    await fsp.writeFile(bad, buf);
    const v = await runCli(['bundle', 'verify', bad]);
    expect(v.code).toBe(5);
    expect(v.stderr).toMatch(/SHA-256/);
    const store = join(dir, 'store');
    const r = await runCli(['bundle', 'import', bad, ...storeArgs(dir)], { env: hubEnv(undefined) });
    expect(r.code).toBe(5);
    await assertNothingPublished(store);
  });

  it('a flipped byte in the manifest\'s hashes: exit 5 or 2, nothing published', async () => {
    const dir = await tmpDir();
    const buf = Buffer.from(await fsp.readFile(bundlePath));
    // Change the first hex digit of the big file's sha256 in the manifest (and its blob list);
    // the blob entry name then no longer matches anything the manifest lists.
    const s = sha(big);
    const text = buf.toString('latin1').replaceAll(s, (s[0] === 'a' ? 'b' : 'a') + s.slice(1));
    const bad = join(dir, 'tampered-manifest.tar');
    await fsp.writeFile(bad, Buffer.from(text, 'latin1'));
    const r = await runCli(['bundle', 'import', bad, ...storeArgs(dir)], { env: hubEnv(undefined) });
    expect([2, 5]).toContain(r.code);
    await assertNothingPublished(join(dir, 'store'));
  });

  it.each([
    ['in the middle of a blob', 0.6],
    ['right after the manifest', 0],
  ])('a truncated bundle (%s): exit 5, nothing published', async (_what, frac) => {
    const dir = await tmpDir();
    const buf = await fsp.readFile(bundlePath);
    // The manifest entry: a 512-byte header, then its content padded to 512 (size in octal at 124).
    const manifestEnd = 512 + Math.ceil(Number.parseInt(buf.subarray(124, 135).toString(), 8) / 512) * 512;
    const cut = frac === 0 ? manifestEnd : Math.floor(buf.length * frac);
    const bad = join(dir, 'truncated.tar');
    await fsp.writeFile(bad, buf.subarray(0, cut));
    const v = await runCli(['bundle', 'verify', bad]);
    expect(v.code).toBe(5);
    const r = await runCli(['bundle', 'import', bad, ...storeArgs(dir)], { env: hubEnv(undefined) });
    expect(r.code).toBe(5);
    await assertNothingPublished(join(dir, 'store'));
  });

  it('a self-consistent bundle that contradicts a commit already in the store: exit 5, the store unchanged', async () => {
    const dir = await tmpDir();
    const args = storeArgs(dir);
    expect((await runCli(['bundle', 'import', bundlePath, ...args], { env: hubEnv(undefined) })).code).toBe(0);
    // Forge: same repo and commit, other bytes for config.json, every hash consistent.
    const entries = await readTar(await fsp.readFile(bundlePath));
    type M = { models: Array<{ name: string; files: Array<{ path: string; size: number; sha256: string; gitOid?: string }> }>; blobs: Array<{ sha256: string; size: number }> };
    const m = JSON.parse(entries[0]!.content.toString()) as M;
    const forged = Buffer.from('{"model_type":"evil"}');
    m.models = m.models.filter((x) => x.name === 'tiny');
    for (const f of m.models[0]!.files) {
      // With its own git id: a bundle without one is refused before this check (digests.test.ts).
      if (f.path === 'config.json') Object.assign(f, { sha256: sha(forged), size: forged.length, gitOid: gitBlobId(forged) });
    }
    const contents = new Map(entries.slice(1).map((e) => [e.name.slice('blobs/sha256/'.length), e.content]));
    contents.set(sha(forged), forged);
    const used = [...new Set(m.models[0]!.files.map((f) => f.sha256))];
    m.blobs = used.map((h) => ({ sha256: h, size: contents.get(h)!.length }));
    const file = join(dir, 'forged.tar');
    await fsp.writeFile(file, await buildTar([{ name: 'swift-fetch-bundle.json', content: JSON.stringify(m) }, ...used.map((h) => ({ name: `blobs/sha256/${h}`, content: contents.get(h)! }))]));
    expect((await runCli(['bundle', 'verify', file])).code).toBe(0); // consistent on its own
    const r = await runCli(['bundle', 'import', file, ...args], { env: hubEnv(undefined) });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/config\.json.*differs/);
    const p = await runCli(['path', 'hf://demo/tiny', ...args], { env: hubEnv(undefined) });
    expect(await fsp.readFile(join(p.stdout.trim(), 'config.json'), 'utf8')).toBe(FILES['config.json']);
    expect((await runCli(['verify', ...args], { env: hubEnv(undefined) })).code).toBe(0);
  });

  it('a missing bundle file is exit 3; a file that is not a tar is exit 2', async () => {
    const dir = await tmpDir();
    const missing = await runCli(['bundle', 'import', join(dir, 'nope.tar'), ...storeArgs(dir)]);
    expect(missing.code).toBe(3);
    const junk = join(dir, 'junk.tar');
    await fsp.writeFile(junk, randomBytes(4096));
    const r = await runCli(['bundle', 'import', junk, ...storeArgs(dir)]);
    expect(r.code).toBe(2);
    await assertNothingPublished(join(dir, 'store'));
  });
});

describe('hostile bundles', () => {
  let manifestText: string;
  let firstBlob: { name: string; content: Buffer };
  beforeAll(async () => {
    const entries = await readTar(await fsp.readFile(bundlePath));
    manifestText = entries[0]!.content.toString();
    firstBlob = entries[1]!;
  });

  const victimName = `sf-escape-${process.pid}-${Date.now()}`;
  const cases: Array<[string, () => TarEntry[]]> = [
    ['a ../ entry', () => [{ name: 'swift-fetch-bundle.json', content: manifestText }, { name: `../${victimName}`, content: 'owned' }]],
    ['a ../ entry inside blobs/', () => [{ name: 'swift-fetch-bundle.json', content: manifestText }, { name: `blobs/sha256/../../../${victimName}`, content: 'owned' }]],
    ['an absolute path', () => [{ name: 'swift-fetch-bundle.json', content: manifestText }, { name: `/tmp/${victimName}`, content: 'owned' }]],
    ['a symlink entry', () => [{ name: 'swift-fetch-bundle.json', content: manifestText }, { name: firstBlob.name, type: 'symlink', linkname: '/etc/passwd' }]],
    ['a hard link entry', () => [{ name: 'swift-fetch-bundle.json', content: manifestText }, { name: firstBlob.name, type: 'link', linkname: '/etc/passwd' }]],
    ['a character device', () => [{ name: 'swift-fetch-bundle.json', content: manifestText }, { name: 'blobs/null', type: 'character-device' }]],
    ['a block device', () => [{ name: 'swift-fetch-bundle.json', content: manifestText }, { name: 'blobs/disk', type: 'block-device' }]],
    ['a FIFO', () => [{ name: 'swift-fetch-bundle.json', content: manifestText }, { name: 'blobs/pipe', type: 'fifo' }]],
    ['an unknown entry', () => [{ name: 'swift-fetch-bundle.json', content: manifestText }, { name: 'README.txt', content: 'hi' }]],
    ['content before the manifest', () => [{ name: firstBlob.name, content: firstBlob.content }, { name: 'swift-fetch-bundle.json', content: manifestText }]],
    ['a manifest path with ..', () => [{ name: 'swift-fetch-bundle.json', content: manifestText.replace('"config.json"', `"../${victimName}"`) }]],
    ['a manifest path that is absolute', () => [{ name: 'swift-fetch-bundle.json', content: manifestText.replace('"config.json"', `"/tmp/${victimName}"`) }]],
    ['a manifest with a hostile org name', () => [{ name: 'swift-fetch-bundle.json', content: manifestText.replace('"org": "demo"', '"org": ".."') }]],
    ['a manifest that is not JSON', () => [{ name: 'swift-fetch-bundle.json', content: '{nope' }]],
  ];

  it.each(cases)('%s: exit 2 from import and verify, nothing written outside the store, nothing published', async (_what, entries) => {
    const dir = await tmpDir();
    const inner = join(dir, 'a', 'b');
    await fsp.mkdir(inner, { recursive: true });
    const file = join(dir, 'hostile.tar');
    await fsp.writeFile(file, await buildTar(entries()));
    const store = join(inner, 'store');
    const r = await runCli(['bundle', 'import', file, '--store', store, '--state-dir', join(dir, 'state')], { env: hubEnv(undefined) });
    expect(r.stderr).not.toMatch(/internal error/);
    expect(r.code).toBe(2);
    const v = await runCli(['bundle', 'verify', file]);
    expect(v.code).toBe(2);
    await assertNothingPublished(store);
    // Nothing beside the store, nothing in the usual escape targets.
    expect((await listTree(dir)).filter((p) => !p.startsWith('a/b/store/') && !['a/', 'a/b/', 'a/b/store/', 'hostile.tar'].includes(p) && !p.startsWith('state'))).toEqual([]);
    expect(existsSync(join('/tmp', victimName))).toBe(false);
    expect(existsSync(join(inner, victimName))).toBe(false);
  });

  it('a blob entry whose header size lies: exit 5, nothing published', async () => {
    const dir = await tmpDir();
    const file = join(dir, 'liar.tar');
    await fsp.writeFile(file, await buildTar([{ name: 'swift-fetch-bundle.json', content: manifestText }, { name: firstBlob.name, content: Buffer.concat([firstBlob.content, Buffer.from('x')]) }]));
    const r = await runCli(['bundle', 'import', file, ...storeArgs(dir)], { env: hubEnv(undefined) });
    expect(r.code).toBe(5);
    await assertNothingPublished(join(dir, 'store'));
  });
});
