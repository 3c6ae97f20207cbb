import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';

// Records are what `path`, `ls`, `verify`, GC and offline pulls believe. One that is torn (a crash
// mid-write on an older version), edited, or written by another version must be refused with a
// one-line reason and exit 6 (storage), never a SyntaxError or a stack trace; a pull repairs it.

const FILES = { 'config.json': '{"model_type":"demo"}', 'w.bin': 'x'.repeat(50_000) };
let hub: FakeHub;
beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'demo/rec', files: FILES });
  await hub.addRepo({ id: 'demo/other', files: { 'a.txt': 'a' } });
});
afterAll(async () => hub?.close());

const env = () => ({ HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: undefined, MODELSCOPE_API_TOKEN: undefined, USE_HF: undefined, HTTPS_PROXY: undefined, HTTP_PROXY: undefined });

async function pulled(ref = 'hf://demo/rec') {
  const dir = await tmpDir();
  const store = join(dir, 'store');
  const args = ['--store', store, '--state-dir', join(dir, 'state')];
  const r = await runCli(['pull', ref, ...args, '-q'], { env: env() });
  expect(r.code).toBe(0);
  const recDir = join(store, '.swift-fetch', 'records', `hf--demo--${ref.split('/').at(-1)}`);
  const file = join(recDir, (await fsp.readdir(recDir)).find((f) => f.endsWith('.json'))!);
  return { store, args, file, recDir };
}

/** Every command that reads records answers 6 with one line naming the record. */
async function expectRefused(args: string[], file: string, why: RegExp) {
  for (const cmd of [['ls'], ['verify'], ['path', 'hf://demo/rec']]) {
    const r = await runCli([...cmd, ...args], { env: env() });
    expect(r.code, `${cmd.join(' ')}: ${r.stderr}`).toBe(6);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(file);
    expect(r.stderr).toMatch(why);
    expect(r.stderr).not.toMatch(/SyntaxError|at .*\.js:\d+/);
  }
}

describe('publish records are validated when read', () => {
  it('a torn record is refused with exit 6, and the next pull rewrites it', async () => {
    const s = await pulled();
    const text = await fsp.readFile(s.file, 'utf8');
    await fsp.writeFile(s.file, text.slice(0, Math.floor(text.length / 2)));
    await expectRefused(s.args, s.file, /damaged publish record.*not JSON.*pull the model again/);

    const again = await runCli(['pull', 'hf://demo/rec', ...s.args, '-q'], { env: env() });
    expect(again.code).toBe(0);
    expect(JSON.parse(await fsp.readFile(s.file, 'utf8'))).toMatchObject({ version: 1, org: 'demo', name: 'rec' });
    expect((await runCli(['verify', ...s.args], { env: env() })).code).toBe(0);
  });

  it('a record of another format version is refused, naming both versions', async () => {
    const s = await pulled();
    const rec = JSON.parse(await fsp.readFile(s.file, 'utf8')) as Record<string, unknown>;
    await fsp.writeFile(s.file, JSON.stringify({ ...rec, version: 2 }));
    await expectRefused(s.args, s.file, /format version 2; this swift-fetch reads version 1/);
  });

  it('a record with a hostile file path, or one moved to another repo, is refused before any path is used', async () => {
    const s = await pulled();
    const rec = JSON.parse(await fsp.readFile(s.file, 'utf8')) as { files: Array<{ path: string }> };
    rec.files[0]!.path = '../../../../etc/passwd';
    await fsp.writeFile(s.file, JSON.stringify(rec));
    await expectRefused(s.args, s.file, /damaged publish record.*unsafe path|damaged publish record.*"\.\." component/);

    const t = await pulled();
    const other = await pulled('hf://demo/other');
    // A valid record of another repo, copied into this repo's folder under its own commit name.
    const foreign = JSON.parse(await fsp.readFile(other.file, 'utf8')) as { commit: string };
    const commit = (await fsp.readdir(t.recDir)).find((f) => f.endsWith('.json'))!.slice(0, -5);
    await fsp.writeFile(t.file, JSON.stringify({ ...foreign, commit }));
    await expectRefused(t.args, t.file, /describes hf:\/\/demo\/other/);
  });

  it('a record missing a field is refused, naming the field', async () => {
    const s = await pulled();
    const rec = JSON.parse(await fsp.readFile(s.file, 'utf8')) as Record<string, unknown>;
    delete rec.files;
    await fsp.writeFile(s.file, JSON.stringify(rec));
    await expectRefused(s.args, s.file, /damaged publish record.*files/);
  });
});
