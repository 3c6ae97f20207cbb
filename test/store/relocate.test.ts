import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';

// The store is a volume: the daemon writes it at one path, an inference pod mounts it at another.
// Every path a command prints must be under the --store that command was given.

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const FILES: Record<string, string> = { 'config.json': '{"model_type":"demo"}', 'sub/tokenizer.json': '{"t":1}', 'w.bin': 'x'.repeat(70_000) };

let hub: FakeHub;
beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'demo/moved', files: FILES });
});
afterAll(async () => hub?.close());

const offline = { HF_ENDPOINT: 'http://127.0.0.1:9', MODELSCOPE_ENDPOINT: 'http://127.0.0.1:9', HF_TOKEN: undefined, MODELSCOPE_API_TOKEN: undefined, USE_HF: undefined };

describe('a moved store', () => {
  it.each(['hf', 'ms'])('%s: path, ls, verify and init answer under the new location after the store directory moves', async (h) => {
    const dir = await tmpDir();
    const before = join(dir, 'written-here');
    const after = join(dir, 'mounted', 'elsewhere');
    const ref = `${h}://demo/moved`;
    const pulled = await runCli(['pull', ref, '--store', before, '--state-dir', join(dir, 'state'), '-q'], {
      env: { ...offline, HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint },
    });
    expect(pulled.stderr).toBe('');
    expect(pulled.code).toBe(0);
    expect(pulled.stdout.trim().startsWith(before + '/')).toBe(true);

    await fsp.mkdir(join(after, '..'), { recursive: true });
    await fsp.rename(before, after);

    const path = await runCli(['path', ref, '--store', after], { env: offline });
    expect(path.code).toBe(0);
    const dirOut = path.stdout.trim();
    expect(dirOut.startsWith(after + '/')).toBe(true);
    for (const [p, c] of Object.entries(FILES)) expect(sha(await fsp.readFile(join(dirOut, p)))).toBe(sha(c));

    const view = await runCli(['path', ref, '--store', after, '--view', h], { env: offline });
    expect(view.code).toBe(0);
    expect(view.stdout.trim().startsWith(after + '/')).toBe(true);
    expect(sha(await fsp.readFile(join(view.stdout.trim(), 'config.json')))).toBe(sha(FILES['config.json']!));

    const ls = await runCli(['ls', '--store', after, '--json'], { env: offline });
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout.trim()).path).toBe(dirOut);

    const verify = await runCli(['verify', ref, '--store', after], { env: offline });
    expect(verify.stderr).toBe('');
    expect(verify.code).toBe(0);

    const linkFile = join(dir, 'link', 'path');
    const init = await runCli(['init', ref, '--store', after, '--state-dir', join(dir, 'init-state'), '--link-file', linkFile, '--daemon', 'http://127.0.0.1:9'], { env: offline });
    expect(init.code).toBe(0);
    expect((await fsp.readFile(linkFile, 'utf8')).trim()).toBe(dirOut);
  });

  it('reads records written with absolute paths (by an earlier version) relative to the store they sit in', async () => {
    const dir = await tmpDir();
    const before = join(dir, 'old');
    const after = join(dir, 'new');
    const pulled = await runCli(['pull', 'hf://demo/moved', '--store', before, '--state-dir', join(dir, 'state'), '-q'], {
      env: { ...offline, HF_ENDPOINT: hub.hfEndpoint },
    });
    expect(pulled.code).toBe(0);
    // Rewrite the record as the first version wrote it: absolute view paths under the old root.
    const recDir = join(before, '.swift-fetch', 'records', 'hf--demo--moved');
    const [file] = (await fsp.readdir(recDir)).filter((f) => f.endsWith('.json'));
    const rec = JSON.parse(await fsp.readFile(join(recDir, file!), 'utf8')) as { commit: string; paths: Record<string, string> };
    expect(rec.paths.plain).toBe(`models/hf/demo/moved/${rec.commit}`);
    rec.paths = { plain: join(before, rec.paths.plain!), hf: join(before, rec.paths.hf!) };
    await fsp.writeFile(join(recDir, file!), JSON.stringify(rec));
    await fsp.rename(before, after);

    const path = await runCli(['path', 'hf://demo/moved', '--store', after], { env: offline });
    expect(path.stdout.trim()).toBe(join(after, 'models', 'hf', 'demo', 'moved', rec.commit));
    const verify = await runCli(['verify', '--store', after], { env: offline });
    expect(verify.code).toBe(0);
  });
});
