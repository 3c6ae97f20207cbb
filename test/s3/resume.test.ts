/**
 * SIGKILL in the middle of a large s3:// pull, then the same pull again: it resumes from the chunks
 * the first process made durable. The bytes are counted on the wire, by a relay in front of MinIO.
 * Both pulls run in their own process (fixtures/pull.ts) with a short lease ttl, so the second takes
 * over the killed one's download lease in seconds rather than the default 30 s.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { run, tmpDir } from '../support/index.js';
import { mergedEnv } from '../support/spawn.js';
import { skipWithoutMinio, startMinio, type CountingProxy, type Minio } from '../support/minio.js';

const MiB = 1024 * 1024;
const SIZE = 40 * MiB + 123;
const CONNECTIONS = 4;
const FIXTURE = fileURLToPath(new URL('./fixtures/pull.ts', import.meta.url));
let minio: Minio;
let proxy: CountingProxy;
let body: Buffer;


describe.skipIf(skipWithoutMinio())('s3 pull after SIGKILL', () => {
  beforeAll(async () => {
    minio = await startMinio();
    proxy = await minio.proxy();
    await minio.createBucket('big');
    body = Buffer.alloc(SIZE);
    for (let i = 0; i < SIZE; i += 4) body.writeUInt32LE((i * 2654435761) >>> 0, Math.min(i, SIZE - 4));
    const sum = createHash('sha256').update(body).digest('base64');
    await minio.client.put('big', 'llm/model.safetensors', body, SIZE, { sha256: sum });
  }, 120_000);
  afterAll(async () => minio?.stop());

  it('resumes: the second run fetches what was missing plus at most one block per connection', async () => {
    const dir = await tmpDir();
    const args = ['--import', 'tsx', FIXTURE, 's3://big/llm', join(dir, 'store'), join(dir, 'state')];
    const opts = { connections: CONNECTIONS, leaseTtlMs: 1500 };
    const env = minio.env({ AWS_ENDPOINT_URL: proxy.endpoint });
    const child = spawn(process.execPath, args, { env: mergedEnv({ ...env, SF_PULL_OPTS: JSON.stringify({ ...opts, maxRate: 16 * MiB }) }), stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_c, sig) => r(sig)));
    let atKill = 0;
    for await (const line of createInterface({ input: child.stdout! })) {
      const e = JSON.parse(line) as { type: string; bytesDone?: number };
      if (e.type === 'progress' && e.bytesDone! >= 0.4 * SIZE) {
        child.kill('SIGKILL');
        atKill = e.bytesDone!;
        break;
      }
    }
    expect(await exited).toBe('SIGKILL');
    expect(atKill).toBeGreaterThanOrEqual(0.4 * SIZE);

    proxy.reset();
    const r = await run(process.execPath, args, { env: { ...env, SF_PULL_OPTS: JSON.stringify(opts) } });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const { done } = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { done: { path: string; bytesDownloaded: number } };
    const wire = proxy.bytesDown();
    // What the first run had on disk is not fetched again; it may lose the block each connection was in.
    expect(wire).toBeLessThan(SIZE - atKill + CONNECTIONS * MiB + 256 * 1024);
    expect(done.bytesDownloaded).toBeLessThan(SIZE - atKill + CONNECTIONS * MiB);
    const got = await fsp.readFile(join(done.path, 'model.safetensors'));
    expect(createHash('sha256').update(got).digest('hex')).toBe(createHash('sha256').update(body).digest('hex'));
  });
});
