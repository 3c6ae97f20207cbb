import { afterEach, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fetchBlobs } from '../../src/transfer/index.js';
import { StorageError } from '../../src/core/errors.js';
import type { TransferEvent } from '../../src/core/transfer.js';
import { MiB, blobRequest, makeContent, serveRange, sha256, startServer, tmpfsStore, type TestServer } from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('ENOSPC', () => {
  it('refuses up front when the store cannot hold the files, naming the store and the bytes', async (ctx) => {
    const { mnt, stateDir } = tmpfsStore('8m', (n) => ctx.skip(n), cleanups);
    const content = makeContent(12 * MiB, 41);
    const srv: TestServer = await startServer((req, res) => serveRange(srv, req, res, content));
    cleanups.push(() => srv.close());
    const err = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], { partialDir: join(mnt, '.swift-fetch/partial'), stateDir, env: {}, storeLabel: mnt }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).exitCode).toBe(6);
    expect((err as Error).message).toContain(mnt);
    expect((err as Error).message).toContain(String(12 * MiB));
    expect(srv.requests).toHaveLength(0);
  });

  it('a disk that fills mid-pull fails with exit 6, publishes nothing, and the pull resumes once space is freed', async (ctx) => {
    const { mnt, stateDir } = tmpfsStore('16m', (n) => ctx.skip(n), cleanups);
    const content = makeContent(12 * MiB, 42);
    const filler = join(mnt, 'filler');
    // Another writer fills the volume right after our pull has checked the free space.
    const srv: TestServer = await startServer((req, res, n) => {
      if (n === 0) writeFileSync(filler, Buffer.alloc(10 * MiB));
      return serveRange(srv, req, res, content);
    });
    cleanups.push(() => srv.close());
    const partialDir = join(mnt, '.swift-fetch/partial');
    const opts = { partialDir, stateDir, env: {}, storeLabel: `store ${mnt}`, connections: 2, chunkSize: MiB };
    const err = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).exitCode).toBe(6);
    expect((err as StorageError).code).toBe('ESF_NO_SPACE');
    expect((err as Error).message).toContain(mnt);
    expect((err as Error).message).toMatch(/\d+ bytes\) still needed/);
    // Only a partial file: nothing that looks finished.
    expect(readdirSync(partialDir).every((f) => f.endsWith('.part'))).toBe(true);

    rmSync(filler);
    const sentBefore = srv.bytesSent();
    const events: TransferEvent[] = [];
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], { ...opts, onEvent: (e) => events.push(e) });
    expect(got!.sha256).toBe(sha256(content));
    expect(readFileSync(got!.path).equals(content)).toBe(true);
    const resumed = (events.find((e) => e.type === 'blob-start') as { resumedBytes: number }).resumedBytes;
    expect(resumed).toBeGreaterThan(0);
    expect(srv.bytesSent() - sentBefore).toBe(content.length - resumed);
  });
});
