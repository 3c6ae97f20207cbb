import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ModelSpec } from '../../src/daemon/config.js';
import { watchModelsFile, type ModelsFileWatcher } from '../../src/daemon/watch.js';
import { tempDir, until } from './helpers.js';

const log = pino({ level: 'silent' });

let dir: string;
let cleanup: () => Promise<void>;
let watcher: ModelsFileWatcher | undefined;
let seen: string[][];

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('sf-watch-'));
  seen = [];
});
afterEach(async () => {
  await watcher?.close();
  watcher = undefined;
  await cleanup();
});

const keys = (s: ModelSpec[]) => s.map((m) => m.key);
const last = () => seen[seen.length - 1];

async function start(file: string): Promise<ModelsFileWatcher> {
  // pollMs 0: what these tests see must come from the file watcher, not the safety-net poll.
  watcher = await watchModelsFile(file, { logger: log, debounceMs: 50, pollMs: 0, onChange: (s) => seen.push(keys(s)) });
  return watcher;
}

/** Exactly what kubelet's AtomicWriter does for a ConfigMap volume update. */
async function kubeletWrite(mount: string, files: Record<string, string>): Promise<void> {
  const ts = `..${new Date().toISOString().replace(/[-:.TZ]/g, '_')}${Math.random().toString().slice(2, 8)}`;
  await fsp.mkdir(join(mount, ts));
  for (const [name, content] of Object.entries(files)) await fsp.writeFile(join(mount, ts, name), content);
  const old = await fsp.readlink(join(mount, '..data')).catch(() => undefined);
  await fsp.symlink(ts, join(mount, '..data_tmp'));
  await fsp.rename(join(mount, '..data_tmp'), join(mount, '..data'));
  for (const name of Object.keys(files)) {
    await fsp.symlink(join('..data', name), join(mount, name)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }
  if (old) await fsp.rm(join(mount, old), { recursive: true, force: true });
}

describe('models file watcher', () => {
  it('follows a ConfigMap volume through several kubelet updates', async () => {
    const mount = join(dir, 'models');
    await fsp.mkdir(mount);
    await kubeletWrite(mount, { 'models.yaml': '- hf://org/a\n' });
    await start(join(mount, 'models.yaml'));
    expect(seen).toEqual([['hf://org/a@main']]);

    await kubeletWrite(mount, { 'models.yaml': '- hf://org/a\n- ms://org/b\n' });
    await until(() => seen.length === 2);
    expect(last()).toEqual(['hf://org/a@main', 'ms://org/b@master']);

    await kubeletWrite(mount, { 'models.yaml': '- ms://org/b\n' });
    await until(() => seen.length === 3);
    expect(last()).toEqual(['ms://org/b@master']);
  });

  it('follows editors that write a temp file and rename it over the original', async () => {
    const file = join(dir, 'models.yaml');
    await fsp.writeFile(file, '- hf://org/a\n');
    await start(file);
    await fsp.writeFile(join(dir, '.models.yaml.swp'), '- hf://org/a\n- hf://org/c\n');
    await fsp.rename(join(dir, '.models.yaml.swp'), file);
    await until(() => seen.length === 2);
    expect(last()).toEqual(['hf://org/a@main', 'hf://org/c@main']);
    // And plain in-place writes.
    await fsp.writeFile(file, '- hf://org/d\n');
    await until(() => seen.length === 3);
    expect(last()).toEqual(['hf://org/d@main']);
  });

  it('keeps the last good list while the file is missing or invalid, then picks it up again', async () => {
    const file = join(dir, 'models.yaml');
    await fsp.writeFile(file, '- hf://org/a\n');
    const w = await start(file);
    await fsp.unlink(file);
    await new Promise((r) => setTimeout(r, 300));
    await w.reload();
    expect(seen).toEqual([['hf://org/a@main']]);
    expect(keys(w.current!)).toEqual(['hf://org/a@main']);

    await fsp.writeFile(file, '- hf://org/a\n- [unclosed\n');
    await new Promise((r) => setTimeout(r, 300));
    await w.reload();
    expect(seen).toHaveLength(1);
    await fsp.writeFile(file, '- hf://not a ref\n');
    await new Promise((r) => setTimeout(r, 300));
    expect(seen).toHaveLength(1);

    await fsp.writeFile(file, '- hf://org/b\n');
    await until(() => seen.length === 2);
    expect(last()).toEqual(['hf://org/b@main']);
  });

  it('starts without the file and reports it once it appears', async () => {
    const file = join(dir, 'models.yaml');
    const w = await start(file);
    expect(w.current).toBeUndefined();
    expect(seen).toEqual([]);
    await fsp.writeFile(file, 'models: [hf://org/late]\n');
    await until(() => seen.length === 1);
    expect(last()).toEqual(['hf://org/late@main']);
  });

  it('does not report an unchanged file again', async () => {
    const file = join(dir, 'models.yaml');
    await fsp.writeFile(file, '- hf://org/a\n');
    const w = await start(file);
    await fsp.writeFile(file, '- hf://org/a\n');
    await fsp.writeFile(join(dir, 'unrelated.txt'), 'x');
    await new Promise((r) => setTimeout(r, 300));
    await w.reload();
    expect(seen).toHaveLength(1);
  });

  it('logs every distinct invalid edit once, however often the watcher looks', async () => {
    const file = join(dir, 'models.yaml');
    await fsp.writeFile(file, '- hf://org/a\n');
    const lines: Array<{ level: number; msg: string; err?: string }> = [];
    const capture = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    watcher = await watchModelsFile(file, { logger: capture, debounceMs: 50, pollMs: 0, onChange: (s) => seen.push(keys(s)) });
    const edits = ['- [unclosed\n', '- hf://not a ref\n', '- [unclosed\n', 'models: 5\n'];
    for (const text of edits) {
      await fsp.writeFile(file, text);
      await new Promise((r) => setTimeout(r, 200));
      await watcher.reload();
      await watcher.reload(); // looking again at the same edit says nothing new
    }
    const warned = lines.filter((l) => l.msg === 'invalid models file; keeping the last list').map((l) => l.err!);
    // Four edits, each different from the one before: four warnings, each naming its own problem.
    expect(warned).toHaveLength(4);
    expect(warned[0]).toMatch(/not valid YAML/);
    expect(warned[1]).toMatch(/invalid model reference/);
    expect(warned[3]).toMatch(/models/);
    expect(new Set(warned.slice(0, 2)).size).toBe(2);
    expect(seen).toEqual([['hf://org/a@main']]);
  });
});
