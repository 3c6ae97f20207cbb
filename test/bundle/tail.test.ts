/**
 * The archive ends at its end-of-archive marker (issue 12, item 11): a valid bundle with a 20 GB
 * sparse zero tail kept `bundle import` busy for minutes (3 min 14 s for `bundle verify` on this
 * machine), stalling the daemon's imports queue. Real tar files, a real sparse file, the built CLI.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importBundle } from '../../src/bundle/index.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';
import { assertNothingPublished, buildTar, hubEnv, pattern, readTar, storeArgs } from './helpers.js';

const GiB = 1024 ** 3;
let hub: FakeHub;
let work: string;
let real: Buffer;
beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'demo/tail', files: { 'config.json': '{"a":1}', 'model.safetensors': pattern(700_000, 5) } });
  work = await tmpDir('sf-tail-');
  const src = storeArgs(work, 'src');
  expect((await runCli(['pull', 'hf://demo/tail', ...src, '-q'], { env: hubEnv(hub) })).code).toBe(0);
  const file = join(work, 'real.tar');
  expect((await runCli(['bundle', 'create', 'hf://demo/tail', '-o', file, ...src, '--quiet'], { env: hubEnv(undefined) })).code).toBe(0);
  real = await fsp.readFile(file);
});
afterAll(async () => hub?.close());

/** A stream over `file` that counts what was read from it. */
function counted(file: string): { stream: Readable; read: () => number } {
  let n = 0;
  const stream = Readable.from(
    (async function* () {
      for await (const c of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
        n += c.length;
        yield c;
      }
    })(),
  );
  return { stream, read: () => n };
}

describe('bundles end at their end-of-archive marker', () => {
  it('a 20 GiB sparse zero tail is not read: import reads the archive and stops', async () => {
    const file = join(work, 'sparse.tar');
    await fsp.writeFile(file, real);
    await fsp.truncate(file, real.length + 20 * GiB);
    const dir = await tmpDir();
    const c = counted(file);
    const r = await importBundle(c.stream, { store: join(dir, 'store') });
    expect(r.models.map((m) => m.ref)).toEqual(['hf://demo/tail@main']);
    // The archive plus the reader's read-ahead (1 MiB chunks): not 20 GiB.
    expect(c.read()).toBeLessThanOrEqual(real.length + 2 * 1024 * 1024);
  });

  it('the CLI verifies and imports it promptly (it took minutes)', async () => {
    const file = join(work, 'sparse-cli.tar');
    await fsp.writeFile(file, real);
    await fsp.truncate(file, real.length + 20 * GiB);
    const t0 = Date.now();
    expect((await runCli(['bundle', 'verify', file])).code).toBe(0);
    const dir = await tmpDir();
    const r = await runCli(['bundle', 'import', file, ...storeArgs(dir)], { env: hubEnv(undefined) });
    expect(r.code, r.stderr).toBe(0);
    // Generous: a few seconds on any machine; reading 20 GiB of zeros took 194 s here.
    expect(Date.now() - t0).toBeLessThan(60_000);
  });

  it('what follows the marker is never looked at, even a well-formed entry', async () => {
    const extra = await buildTar([{ name: 'blobs/sha256/' + 'f'.repeat(64), content: 'not listed' }]);
    const file = join(work, 'trailing.tar');
    await fsp.writeFile(file, Buffer.concat([real, extra]));
    const dir = await tmpDir();
    const r = await runCli(['bundle', 'import', file, ...storeArgs(dir)], { env: hubEnv(undefined) });
    expect(r.code, r.stderr).toBe(0);
  });

  it('two zero blocks before the last blob end the archive there: the missing blob is exit 5, nothing published', async () => {
    const entries = await readTar(real);
    const head = await buildTar(entries.slice(0, -1).map((e) => ({ name: e.name, content: e.content })));
    const tail = await buildTar(entries.slice(-1).map((e) => ({ name: e.name, content: e.content })));
    // buildTar ends each archive with its own marker (two zero blocks): the first one's cuts the bundle short.
    const file = join(work, 'cut.tar');
    await fsp.writeFile(file, Buffer.concat([head, tail]));
    const dir = await tmpDir();
    const r = await runCli(['bundle', 'import', file, ...storeArgs(dir)], { env: hubEnv(undefined) });
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/missing 1 of/);
    await assertNothingPublished(join(dir, 'store'));
  });
});
