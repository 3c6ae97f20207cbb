/** The daemon's imports folder, run on its own: real files, a real chokidar watcher, a real store. */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startImportsWatcher, type ImportsWatcher } from '../../src/daemon/imports.js';
import { Store } from '../../src/store/store.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';
import { hubEnv, listTree, pattern, sha, storeArgs } from './helpers.js';

let hub: FakeHub;
let good: Buffer;
const big = pattern(1024 * 1024 + 77, 21);

async function until<T>(fn: () => Promise<T | undefined | false>, what: string, limitMs = 30_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() - start > limitMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'demo/dropped', files: { 'config.json': '{"x":1}', 'model.safetensors': big } });
  const dir = await tmpDir();
  const file = join(dir, 'b.tar');
  const r = await runCli(['bundle', 'create', 'hf://demo/dropped', '-o', file, ...storeArgs(dir), '--quiet'], { env: hubEnv(hub) });
  expect(r.code).toBe(0);
  good = await fsp.readFile(file);
});
afterAll(async () => hub?.close());

describe('imports folder', () => {
  let watcher: ImportsWatcher | undefined;
  afterAll(async () => watcher?.close());

  it('imports a good bundle (written slowly) into done/, a tampered one into failed/ with a reason, and ignores other files', async () => {
    const dir = await tmpDir();
    const imports = join(dir, 'imports');
    const store = join(dir, 'store');
    // Present before the watcher starts: picked up at start.
    await fsp.mkdir(imports, { recursive: true });
    const tampered = Buffer.from(good);
    const at = tampered.indexOf(big.subarray(5000, 5064));
    tampered[at] = tampered[at]! ^ 0xff;
    await fsp.writeFile(join(imports, 'bad.swiftbundle'), tampered);
    await fsp.writeFile(join(imports, 'notes.txt'), 'not a bundle');

    const imported: string[] = [];
    const failed: string[] = [];
    watcher = await startImportsWatcher({
      dir: imports,
      store,
      logger: pino({ level: 'silent' }),
      stabilityMs: 1_000,
      onImported: ({ result }) => imported.push(...result.models.map((m) => m.ref)),
      onFailed: ({ file }) => failed.push(file),
    });

    // Written in pieces with short pauses: the watcher must wait for the whole file.
    const fh = await fsp.open(join(imports, 'good.tar'), 'w');
    const step = Math.ceil(good.length / 8);
    for (let off = 0; off < good.length; off += step) {
      await fh.write(good.subarray(off, off + step));
      await new Promise((r) => setTimeout(r, 60));
    }
    await fh.close();

    await until(async () => (await listTree(imports)).includes('done/good.tar'), 'good.tar in done/');
    await until(async () => (await listTree(imports)).includes('failed/bad.swiftbundle.reason.txt'), 'the reason file');

    expect(imported).toEqual(['hf://demo/dropped@main']);
    expect(failed).toEqual([join(imports, 'bad.swiftbundle')]);
    const reason = await fsp.readFile(join(imports, 'failed', 'bad.swiftbundle.reason.txt'), 'utf8');
    expect(reason).toMatch(/SHA-256/);
    expect(reason).toMatch(/code: ESF_INTEGRITY/);
    expect(reason).toMatch(/exit code: 5/);
    expect(await fsp.readFile(join(imports, 'failed', 'bad.swiftbundle'))).toEqual(tampered);
    // Left alone: not a bundle.
    expect(await fsp.readFile(join(imports, 'notes.txt'), 'utf8')).toBe('not a bundle');
    expect((await listTree(imports)).filter((p) => !p.endsWith('/')).sort()).toEqual(
      ['done/good.tar', 'failed/bad.swiftbundle', 'failed/bad.swiftbundle.reason.txt', 'notes.txt'],
    );

    // The good bundle's model is published, by branch name, offline.
    const rec = await new Store(store).findRecord({ hub: 'hf', org: 'demo', name: 'dropped' }, 'main');
    expect(sha(await fsp.readFile(join(rec.paths.plain, 'model.safetensors')))).toBe(sha(big));

    // Dropping the same bundle again is harmless: imported again, moved aside under a new name.
    await fsp.writeFile(join(imports, '.good.tar.part'), good);
    await fsp.rename(join(imports, '.good.tar.part'), join(imports, 'good.tar'));
    await until(async () => (await fsp.readdir(join(imports, 'done'))).length === 2, 'the second copy in done/');
    expect(imported).toEqual(['hf://demo/dropped@main', 'hf://demo/dropped@main']);
    await watcher.close();
    watcher = undefined;
  });

  /** A watcher with a short stability window, recording what it imported and what failed. */
  async function watchQuickly(imports: string, store: string): Promise<{ w: ImportsWatcher; imported: string[]; failed: string[] }> {
    const out = { imported: [] as string[], failed: [] as string[] };
    const w = await startImportsWatcher({
      dir: imports,
      store,
      logger: pino({ level: 'silent' }),
      stabilityMs: 300,
      onImported: ({ result }) => out.imported.push(...result.models.map((m) => m.ref)),
      onFailed: ({ file }) => out.failed.push(file),
    });
    watcher = w;
    return { w, ...out };
  }

  // Issue 12, item 11: a bundle still being written was imported early and failed for good.
  it('a copy that pauses longer than the stability window still lands once it is complete', async () => {
    const dir = await tmpDir();
    const imports = join(dir, 'imports');
    const { w, imported, failed } = await watchQuickly(imports, join(dir, 'store'));
    const fh = await fsp.open(join(imports, 'slow.tar'), 'w');
    await fh.write(good.subarray(0, Math.floor(good.length / 2)));
    // The writer stalls (a network copy waiting on a slow link): the half file is tried and fails...
    await until(async () => (await listTree(imports)).includes('failed/slow.tar.reason.txt') && true, 'the early attempt to fail');
    expect(imported).toEqual([]);
    // ...then the copy goes on (its writer still holds the file, wherever it was moved) and ends.
    await fh.write(good.subarray(Math.floor(good.length / 2)));
    await fh.close();
    await until(async () => (await listTree(imports)).includes('done/slow.tar') && true, 'slow.tar in done/');
    expect(imported).toEqual(['hf://demo/dropped@main']);
    expect(failed).toEqual([join(imports, 'slow.tar')]);
    expect((await listTree(imports)).filter((p) => !p.endsWith('/'))).toEqual(['done/slow.tar']);
    expect(await fsp.readFile(join(imports, 'done', 'slow.tar'))).toEqual(good);
    await w.close();
    watcher = undefined;
  });

  it('a failed bundle replaced by a good copy is tried again', async () => {
    const dir = await tmpDir();
    const imports = join(dir, 'imports');
    await fsp.mkdir(imports, { recursive: true });
    const tampered = Buffer.from(good);
    const at = tampered.indexOf(big.subarray(9000, 9064));
    tampered[at] = tampered[at]! ^ 0xff;
    await fsp.writeFile(join(imports, 'fix.tar'), tampered);
    const { w, imported } = await watchQuickly(imports, join(dir, 'store'));
    await until(async () => (await listTree(imports)).includes('failed/fix.tar.reason.txt') && true, 'the tampered copy to fail');
    // An operator puts a good copy where the bad one is.
    await fsp.writeFile(join(imports, 'failed', 'fix.tar'), good);
    await until(async () => (await listTree(imports)).includes('done/fix.tar') && true, 'fix.tar in done/');
    expect(imported).toEqual(['hf://demo/dropped@main']);
    expect((await listTree(imports)).filter((p) => !p.endsWith('/'))).toEqual(['done/fix.tar']);
    await w.close();
    watcher = undefined;
  });
});
