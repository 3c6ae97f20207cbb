/**
 * Lock files end to end: the real CLI against the fake hub (HTTP, LFS redirects to a CDN host),
 * real stores, real files, and the real sha256sum.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hubEnv, listTree, pattern, sha, storeArgs } from '../bundle/helpers.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { run, runCli, tmpDir } from '../support/index.js';
import { toolMissing } from '../support/tools.js';

let hub: FakeHub;
let tiny: AddedRepo;
const big = pattern(2 * 1024 * 1024 + 333, 3);
const FILES: Record<string, Buffer | string> = {
  'config.json': '{"model_type":"demo"}',
  'nested/tokenizer.json': '{"tok":true}',
  'model.safetensors': big,
};
const MOVING_A = { 'config.json': '{"v":"a"}', 'weights.bin': pattern(300_000, 1) };
const MOVING_B = { 'config.json': '{"v":"b"}', 'weights.bin': pattern(300_000, 2) };

interface LockJson {
  lockfileVersion: number;
  models: Array<{ ref: string; hub: string; endpoint: string; commit: string; include?: string[]; exclude?: string[]; files: Array<{ path: string; size: number; sha256: string; gitOid?: string }> }>;
}

const env = () => hubEnv(hub);
const readLock = async (file: string) => JSON.parse(await fsp.readFile(file, 'utf8')) as LockJson;
/** Requests that named a repo (any endpoint, any host). */
const requestsFor = (id: string) => hub.log.filter((e) => e.url.includes(id)).length;

/** A store holds no published trace of a repo: no record, no local ref, no view. */
async function assertNotPublished(store: string, hubName: string, org: string, name: string): Promise<void> {
  const tree = await listTree(store);
  const traces = tree.filter((p) =>
    p.startsWith(`.swift-fetch/records/${hubName}--${org}--${name}/`) || p.startsWith(`.swift-fetch/refs/${hubName}--${org}--${name}/`) ||
    p.startsWith(`models/${hubName}/${org}/${name}/`) || p.startsWith(`huggingface/hub/models--${org}--${name}/snapshots/`));
  expect(traces.filter((p) => !p.endsWith('/'))).toEqual([]);
}

beforeAll(async () => {
  hub = await startFakeHub({ treePageSize: 2 });
  tiny = await hub.addRepo({ id: 'demo/tiny', files: FILES });
  await hub.addRepo({ id: 'demo/other', files: { 'config.json': '{"other":1}' } });
});
afterAll(async () => hub?.close());

describe('swift-fetch lock', () => {
  it('writes every selected file with path, size, SHA-256 and git oid at the resolved commit, byte-identical whatever the order or run', async () => {
    const dir = await tmpDir();
    const a = join(dir, 'a.lock');
    const b = join(dir, 'b.lock');
    const r1 = await runCli(['lock', 'hf://demo/tiny', 'ms://demo/tiny', 'hf://demo/tiny@main', '-o', a, ...storeArgs(dir)], { env: env() });
    expect(r1.stderr).toBe('');
    expect(r1.code).toBe(0);
    expect(r1.stdout).toMatch(/^locked +hf:\/\/demo\/tiny@main/m);
    const r2 = await runCli(['lock', 'ms://demo/tiny', 'hf://demo/tiny', '-o', b, ...storeArgs(dir), '--quiet'], { env: env() });
    expect(r2.code).toBe(0);
    const text = await fsp.readFile(a, 'utf8');
    expect(await fsp.readFile(b, 'utf8')).toBe(text);
    expect(text.endsWith('}\n')).toBe(true);

    const lock = JSON.parse(text) as LockJson;
    expect(lock.lockfileVersion).toBe(1);
    expect(lock.models.map((m) => m.ref)).toEqual(['hf://demo/tiny@main', 'ms://demo/tiny@master']);
    const [hf, ms] = lock.models as [LockJson['models'][0], LockJson['models'][0]];
    expect(hf).toMatchObject({ hub: 'hf', endpoint: hub.hfEndpoint, commit: tiny.commit });
    expect(ms).toMatchObject({ hub: 'ms', commit: tiny.commit });
    // The SHA-256 of every file's content, computed here from the content the hub serves, and the
    // git oid the hub lists; HF gives no SHA-256 for the small files, so lock had to hash them.
    const expected = Object.entries(FILES).sort(([x], [y]) => (x < y ? -1 : 1)).map(([path, c]) => ({ path, size: Buffer.byteLength(c), sha256: sha(c) }));
    expect(hf.files.map(({ path, size, sha256 }) => ({ path, size, sha256 }))).toEqual(expected);
    expect(ms.files.map(({ path, size, sha256 }) => ({ path, size, sha256 }))).toEqual(expected);
    const oids = Object.fromEntries(tiny.files.map((f) => [f.path, f.gitOid]));
    for (const f of hf.files) expect(f.gitOid).toBe(oids[f.path]);

    // A third run, now with the small files' hashes from nowhere but the hub again: the same bytes.
    const r3 = await runCli(['lock', 'hf://demo/tiny', 'ms://demo/tiny', '-o', a, ...storeArgs(dir, 'other-store'), '--quiet'], { env: env() });
    expect(r3.code).toBe(0);
    expect(await fsp.readFile(a, 'utf8')).toBe(text);
  });

  it('records --include/--exclude, and pull --lock fetches exactly that selection', async () => {
    const dir = await tmpDir();
    const file = join(dir, 'sel.lock');
    const r = await runCli(['lock', 'hf://demo/tiny', '--include', '*.json', '--exclude', 'nested/*', '-o', file, ...storeArgs(dir)], { env: env() });
    expect(r.code).toBe(0);
    const m = (await readLock(file)).models[0]!;
    expect(m.include).toEqual(['*.json']);
    expect(m.exclude).toEqual(['nested/*']);
    expect(m.files.map((f) => f.path)).toEqual(['config.json']);
    const p = await runCli(['pull', 'hf://demo/tiny', '--lock', file, ...storeArgs(dir), '--quiet'], { env: env() });
    expect(p.stderr).toBe('');
    expect(p.code).toBe(0);
    expect((await listTree(p.stdout.trim())).filter((x) => !x.endsWith('/'))).toEqual(['config.json']);
  });

  it('refuses an invalid or tampered lock file with exit 2 and a clear message, before any request', async () => {
    const dir = await tmpDir();
    const good = join(dir, 'good.lock');
    expect((await runCli(['lock', 'hf://demo/tiny', '-o', good, ...storeArgs(dir), '--quiet'], { env: env() })).code).toBe(0);
    const lock = await readLock(good);
    const notJson = join(dir, 'not-json.lock');
    await fsp.writeFile(notJson, (await fsp.readFile(good, 'utf8')).slice(0, 100));
    const badSha = join(dir, 'bad-sha.lock');
    lock.models[0]!.files[1]!.sha256 = 'f'.repeat(63) + 'g';
    await fsp.writeFile(badSha, JSON.stringify(lock));
    hub.resetStats();
    for (const [file, message] of [
      [notJson, /^swift-fetch: invalid lock file .*not-json\.lock: not JSON/],
      [badSha, /^swift-fetch: invalid lock file .*bad-sha\.lock: models\[0\]\.files\[1\]\.sha256: expected 64 lowercase hex digits\n$/],
    ] as const) {
      for (const cmd of [['pull', 'hf://demo/tiny', '--lock', file], ['init', 'hf://demo/tiny', '--lock', file], ['lock', '--check', '-o', file], ['verify', '--lock', file]]) {
        const r = await runCli([...cmd, ...storeArgs(dir)], { env: env() });
        expect(r.code, `${cmd.join(' ')}\n${r.stderr}`).toBe(2);
        expect(r.stderr).toMatch(message);
      }
    }
    expect(hub.log).toEqual([]);
    const missing = await runCli(['pull', 'hf://demo/tiny', '--lock', join(dir, 'nope.lock'), ...storeArgs(dir)], { env: env() });
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/lock file .*nope\.lock does not exist/);
  });

  it.each([
    ['model.safetensors', 'an LFS file (the hub lists a SHA-256 for it: refused before any download)'],
    ['config.json', 'a small file (the hub lists only its git oid: refused once its bytes hash otherwise)'],
  ])('a lock whose SHA-256 for %s differs from the content: exit 5 naming the file, nothing published — %s', async (path) => {
    const dir = await tmpDir();
    const file = join(dir, 'x.lock');
    expect((await runCli(['lock', 'hf://demo/tiny', '-o', file, ...storeArgs(dir), '--quiet'], { env: env() })).code).toBe(0);
    const lock = await readLock(file);
    const f = lock.models[0]!.files.find((x) => x.path === path)!;
    f.sha256 = sha(`not the content of ${path}`);
    await fsp.writeFile(file, JSON.stringify(lock));
    const r = await runCli(['pull', 'hf://demo/tiny', '--lock', file, ...storeArgs(dir), '--quiet'], { env: env() });
    expect(r.code).toBe(5);
    expect(r.stderr).toContain(`differs from the lock ${file}: ${path}: `);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    await assertNotPublished(join(dir, 'store'), 'hf', 'demo', 'tiny');
  });
});

describe('a branch that moved after locking', () => {
  let dir: string;
  let file: string;
  let a: AddedRepo;
  let b: AddedRepo;
  beforeAll(async () => {
    dir = await tmpDir();
    file = join(dir, 'swift-fetch.lock');
    a = await hub.addRepo({ id: 'demo/moving', files: MOVING_A });
    // Written in the working directory by default.
    const r = await runCli(['lock', 'hf://demo/moving', ...storeArgs(dir), '--quiet'], { env: env(), cwd: dir });
    expect(r.code).toBe(0);
    b = await hub.addRepo({ id: 'demo/moving', files: MOVING_B });
    expect(b.commit).not.toBe(a.commit);
  });

  it('lock --check exits 5 naming the model, its locked commit and the hub\'s', async () => {
    const r = await runCli(['lock', '--check', '-o', file, ...storeArgs(dir)], { env: env() });
    expect(r.code).toBe(5);
    expect(r.stdout).toContain(`MOVED     hf://demo/moving@main  locked ${a.commit.slice(0, 12)}, the hub has ${b.commit.slice(0, 12)} now`);
    expect(r.stderr).toMatch(/1 of 1 locked model\(s\) no longer match the hub; re-pin with: swift-fetch lock --update/);
    const json = await runCli(['lock', '--check', '-o', file, ...storeArgs(dir), '--json'], { env: env() });
    expect(JSON.parse(json.stdout.trim())).toMatchObject({ type: 'checked', ref: 'hf://demo/moving@main', state: 'moved', locked: a.commit, commit: b.commit });
  });

  it('pull --lock and init --lock still get the locked commit, and the branch name points at it in the store', async () => {
    const s = storeArgs(dir, 'pinned');
    const r = await runCli(['pull', 'hf://demo/moving', '--lock', file, ...s, '--quiet'], { env: env() });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(join(dir, 'pinned', 'models', 'hf', 'demo', 'moving', a.commit));
    expect(await fsp.readFile(join(r.stdout.trim(), 'config.json'), 'utf8')).toBe(MOVING_A['config.json']);
    expect(sha(await fsp.readFile(join(r.stdout.trim(), 'weights.bin')))).toBe(sha(MOVING_A['weights.bin']));
    // What huggingface_hub and `path` resolve "main" to, offline: the locked commit.
    expect(await fsp.readFile(join(dir, 'pinned', 'huggingface', 'hub', 'models--demo--moving', 'refs', 'main'), 'utf8')).toBe(a.commit);
    const p = await runCli(['path', 'hf://demo/moving', ...s], { env: hubEnv(undefined) });
    expect(p.stdout.trim()).toBe(r.stdout.trim());

    const init = await runCli(['init', 'hf://demo/moving', '--lock', file, ...storeArgs(dir, 'init-store')], { env: env() });
    expect(init.code).toBe(0);
    expect(init.stdout.trim()).toBe(join(dir, 'init-store', 'models', 'hf', 'demo', 'moving', a.commit));
    // A second init answers from the store, offline, and still checks it against the lock.
    const again = await runCli(['init', 'hf://demo/moving', '--lock', file, ...storeArgs(dir, 'init-store')], { env: hubEnv(undefined) });
    expect(again.code).toBe(0);
    expect(again.stdout).toBe(init.stdout);
  });

  it('offline, pull --lock publishes the locked commit the store holds; without the lock the hub\'s new commit is pulled', async () => {
    const s = storeArgs(dir, 'both');
    expect((await runCli(['pull', 'hf://demo/moving', ...s, '--quiet'], { env: env() })).stdout.trim()).toMatch(new RegExp(`${b.commit}$`));
    expect((await runCli(['pull', 'hf://demo/moving', '--lock', file, ...s, '--quiet'], { env: env() })).stdout.trim()).toMatch(new RegExp(`${a.commit}$`));
    // The hub unreachable: the locked commit is in the store, so the pinned pull needs nothing from it.
    const offline = await runCli(['pull', 'hf://demo/moving', '--lock', file, ...s, '--quiet'], { env: hubEnv(undefined) });
    expect(offline.code).toBe(0);
    expect(offline.stdout.trim()).toMatch(new RegExp(`${a.commit}$`));
    expect((await runCli(['verify', '--lock', file, ...s], { env: hubEnv(undefined) })).code).toBe(0);
    // A pull without the lock moves "main" in this store to the hub's commit: verify --lock says so.
    expect((await runCli(['pull', 'hf://demo/moving', ...s, '--quiet'], { env: env() })).code).toBe(0);
    const moved = await runCli(['verify', '--lock', file, ...s], { env: hubEnv(undefined) });
    expect(moved.code).toBe(5);
    expect(moved.stdout).toContain(`DIFFERS  hf://demo/moving@main ${a.commit.slice(0, 12)} (refs): ref, locked main -> ${a.commit}, found main -> ${b.commit}`);
  });

  it('lock --update re-pins to the hub\'s commit, after which --check passes', async () => {
    const copy = join(dir, 'updated.lock');
    await fsp.copyFile(file, copy);
    const r = await runCli(['lock', '--update', '-o', copy, ...storeArgs(dir)], { env: env() });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`updated   hf://demo/moving@main  ${a.commit.slice(0, 12)} -> ${b.commit.slice(0, 12)}`);
    expect((await readLock(copy)).models[0]!.commit).toBe(b.commit);
    expect((await runCli(['lock', '--check', '-o', copy, ...storeArgs(dir)], { env: env() })).code).toBe(0);
    // --update REF adds a ref without moving the others.
    const add = await runCli(['lock', '--update', 'hf://demo/other', '-o', file, ...storeArgs(dir)], { env: env() });
    expect(add.stdout).toMatch(/^added +hf:\/\/demo\/other@main/m);
    const both = await readLock(file);
    expect(both.models.map((m) => [m.ref, m.commit])).toEqual([['hf://demo/moving@main', a.commit], ['hf://demo/other@main', expect.stringMatching(/^[0-9a-f]{40}$/)]]);
  });
});

describe('--locked', () => {
  it('refuses a ref the lock does not name with exit 2 and no request to the hub; without it, such a ref is pulled as usual', async () => {
    const dir = await tmpDir();
    const file = join(dir, 'only-tiny.lock');
    expect((await runCli(['lock', 'hf://demo/tiny', '-o', file, ...storeArgs(dir), '--quiet'], { env: env() })).code).toBe(0);
    hub.resetStats();
    for (const cmd of ['pull', 'init']) {
      const r = await runCli([cmd, 'hf://demo/other', '--lock', file, '--locked', ...storeArgs(dir)], { env: env() });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/hf:\/\/demo\/other@main is not in the lock .*only-tiny\.lock, and locked mode refuses refs the lock does not name/);
    }
    expect(requestsFor('demo/other')).toBe(0);
    const loose = await runCli(['pull', 'hf://demo/other', '--lock', file, ...storeArgs(dir), '--quiet'], { env: env() });
    expect(loose.code).toBe(0);
    expect((await runCli(['pull', 'hf://demo/other', '--locked', ...storeArgs(dir)], { env: env() })).code).toBe(2);
  });
});

describe.skipIf(toolMissing('sha256sum', 'to check sha256sums output'))('swift-fetch sha256sums (skipped without sha256sum)', () => {
  it('prints lines that sha256sum -c accepts in the plain directory, and that catch a changed file', async () => {
    const dir = await tmpDir();
    const s = storeArgs(dir);
    const pulled = await runCli(['pull', 'ms://demo/tiny', ...s, '--quiet'], { env: env() });
    expect(pulled.code).toBe(0);
    const plain = pulled.stdout.trim();
    const sums = await runCli(['sha256sums', 'ms://demo/tiny', ...s], { env: hubEnv(undefined) });
    expect(sums.code).toBe(0);
    expect(sums.stdout.trim().split('\n')).toEqual(Object.keys(FILES).sort().map((p) => `${sha(FILES[p]!)}  ${p}`));
    const ok = await run('sha256sum', ['-c', '--strict', '-'], { cwd: plain, input: sums.stdout });
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout.trim().split('\n').sort()).toEqual(Object.keys(FILES).sort().map((p) => `${p}: OK`));
    // Replace (not edit: the view links the store's blob) one file: sha256sum -c now fails on it.
    await fsp.rm(join(plain, 'nested', 'tokenizer.json'));
    await fsp.writeFile(join(plain, 'nested', 'tokenizer.json'), '{"tok":false}');
    const bad = await run('sha256sum', ['-c', '-'], { cwd: plain, input: sums.stdout });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain('nested/tokenizer.json: FAILED');
    const missing = await runCli(['sha256sums', 'hf://demo/other', ...s], { env: hubEnv(undefined) });
    expect(missing.code).toBe(3);
  });
});

describe('verify --lock', () => {
  it('passes for a store that holds the lock, exits 5 for a changed file, 3 for a model not there', async () => {
    const dir = await tmpDir();
    const s = storeArgs(dir);
    const file = join(dir, 'v.lock');
    expect((await runCli(['lock', 'hf://demo/tiny', 'ms://demo/other', '-o', file, ...s, '--quiet'], { env: env() })).code).toBe(0);
    const pulled = await runCli(['pull', 'hf://demo/tiny', '--lock', file, ...s, '--quiet'], { env: env() });
    expect(pulled.code).toBe(0);
    // ms://demo/other is not pulled yet: 3.
    const partial = await runCli(['verify', '--lock', file, ...s], { env: hubEnv(undefined) });
    expect(partial.code).toBe(3);
    expect(partial.stdout).toMatch(/^ok +hf:\/\/demo\/tiny@main/m);
    expect(partial.stdout).toMatch(/^MISSING +ms:\/\/demo\/other@master/m);
    // A ModelScope ref pinned the same way (listed at the locked commit by its Revision parameter).
    const ms = await runCli(['pull', 'ms://demo/other', '--lock', file, ...s, '--quiet'], { env: env() });
    expect(ms.stderr).toBe('');
    expect(ms.code).toBe(0);
    const ok = await runCli(['verify', '--lock', file, ...s], { env: hubEnv(undefined) });
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^ok +ms:\/\/demo\/other@master [0-9a-f]{12} \(1 files, as locked\)$/m);
    const plain = pulled.stdout.trim();
    await fsp.rm(join(plain, 'config.json'));
    await fsp.writeFile(join(plain, 'config.json'), '{"model_type":"evil"}');
    const bad = await runCli(['verify', '--lock', file, 'hf://demo/tiny', ...s, '--json'], { env: hubEnv(undefined) });
    expect(bad.code).toBe(5);
    const res = JSON.parse(bad.stdout.trim()) as { ok: boolean; problems: Array<{ path: string; problem: string }> };
    expect(res.ok).toBe(false);
    expect(res.problems).toEqual([expect.objectContaining({ path: 'config.json', problem: 'hash' })]);
  });
});

describe('swift-fetch inspect', () => {
  it('shows where every file came from, as text and as JSON, and still reads records written before provenance was kept', async () => {
    const dir = await tmpDir();
    const s = storeArgs(dir);
    const file = join(dir, 'i.lock');
    expect((await runCli(['lock', 'hf://demo/tiny', '-o', file, ...s, '--quiet'], { env: env() })).code).toBe(0);
    expect((await runCli(['pull', 'hf://demo/tiny', '--lock', file, ...s, '--quiet'], { env: env() })).code).toBe(0);
    const j = await runCli(['inspect', 'hf://demo/tiny', ...s, '--json'], { env: hubEnv(undefined) });
    expect(j.code).toBe(0);
    const rec = JSON.parse(j.stdout) as { commit: string; files: Array<{ path: string; size: number; from: Record<string, any> }> };
    expect(rec.commit).toBe(tiny.commit);
    const lockSha = sha(await fsp.readFile(file));
    for (const f of rec.files) {
      expect(f.from).toMatchObject({ via: 'download', hub: 'hf', commit: tiny.commit, endpoint: hub.hfEndpoint, lock: { file, sha256: lockSha } });
      // Every byte of each file came from the origin (hub or CDN) in this pull: no peers here.
      expect(f.from.bytes).toEqual({ origin: f.size, peer: 0, replica: 0 });
      expect(Date.parse(f.from.at)).toBeGreaterThan(Date.now() - 120_000);
    }
    const text = await runCli(['inspect', 'hf://demo/tiny', ...s], { env: hubEnv(undefined) });
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^  model\\.safetensors +2\\.0 MiB +${sha(big).slice(0, 12)}  downloaded \\(origin 2\\.0 MiB\\) from hf ${hub.hfEndpoint.replace(/[.]/g, '\\.')} · commit ${tiny.commit.slice(0, 12)} · .* · checked against lock ${file.replace(/[.]/g, '\\.')}`, 'm'));

    // A record as the previous version wrote it: no `from` anywhere.
    const recordFile = join(dir, 'store', '.swift-fetch', 'records', 'hf--demo--tiny', `${tiny.commit}.json`);
    const stored = JSON.parse(await fsp.readFile(recordFile, 'utf8')) as { files: Array<Record<string, unknown>> };
    for (const f of stored.files) delete f.from;
    await fsp.writeFile(recordFile, JSON.stringify(stored, null, 2));
    const old = await runCli(['inspect', 'hf://demo/tiny', ...s], { env: hubEnv(undefined) });
    expect(old.stderr).toBe('');
    expect(old.code).toBe(0);
    expect(old.stdout).toMatch(/config\.json .* unknown \(published before provenance was recorded\)/);
    for (const cmd of [['verify', 'hf://demo/tiny'], ['path', 'hf://demo/tiny'], ['ls']]) {
      expect((await runCli([...cmd, ...s], { env: hubEnv(undefined) })).code, cmd.join(' ')).toBe(0);
    }
    // Pulling again (all content held) keeps what is known and adds the lock it was checked against.
    expect((await runCli(['pull', 'hf://demo/tiny', '--lock', file, ...s, '--quiet'], { env: env() })).code).toBe(0);
    const again = JSON.parse((await runCli(['inspect', 'hf://demo/tiny', ...s, '--json'], { env: hubEnv(undefined) })).stdout) as typeof rec;
    expect(again.files[0]!.from).toMatchObject({ via: 'store', lock: { file, sha256: lockSha } });
  });
});
