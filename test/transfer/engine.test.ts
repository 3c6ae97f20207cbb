import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { completedRanges, fetchBlobs, forgetBlob, type EngineOptions } from '../../src/transfer/index.js';
import { formatBlobKey } from '../../src/core/blob-key.js';
import { ResumeState } from '../../src/state/resume.js';
import type { TransferEvent } from '../../src/core/transfer.js';
import { MiB, blobRequest, gitOid, makeContent, serveRange, sha256, startServer, tempDir, type TestServer } from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function dirs(): Pick<EngineOptions, 'partialDir' | 'stateDir'> & { root: string } {
  const t = tempDir();
  cleanups.push(t.cleanup);
  return { root: t.dir, partialDir: join(t.dir, 'store/.swift-fetch/partial'), stateDir: join(t.dir, 'state') };
}

async function origin(content: Buffer, etag = 'e1'): Promise<TestServer> {
  const srv: TestServer = await startServer((req, res) => serveRange(srv, req, res, content, { etag }));
  cleanups.push(() => srv.close());
  return srv;
}

describe('fetchBlobs', () => {
  it('fetches a multi-chunk file over parallel ranged requests and verifies it', async () => {
    const content = makeContent(10 * MiB + 12345, 7);
    const srv = await origin(content);
    const d = dirs();
    const events: TransferEvent[] = [];
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], { ...d, connections: 4, chunkSize: MiB, env: {}, onEvent: (e) => events.push(e) });
    expect(got!.sha256).toBe(sha256(content));
    expect(got!.path.startsWith(d.partialDir)).toBe(true);
    expect(readFileSync(got!.path).equals(content)).toBe(true);
    // 11 chunks of 1 MiB, each asked for by range; the total sent is the file, once.
    const ranges = srv.requests.map((r) => r.range);
    expect(ranges).toContain('bytes=0-1048575');
    expect(ranges).toContain(`bytes=${10 * MiB}-${content.length - 1}`);
    expect(srv.bytesSent()).toBe(content.length);
    // Keep-alive: connections reused, never more than asked for.
    expect(srv.sockets.size).toBeLessThanOrEqual(4);
    expect(srv.requests.length).toBe(11);
    const progress = events.filter((e) => e.type === 'progress').reduce((n, e) => n + (e.type === 'progress' ? e.bytes : 0), 0);
    expect(progress).toBe(content.length);
    expect(events.at(-1)).toMatchObject({ type: 'blob-verified', size: content.length });
    expect(events[0]).toMatchObject({ type: 'blob-start', resumedBytes: 0 });
  });

  it('fetches identical keys once and many small files over few connections', async () => {
    const files = Array.from({ length: 30 }, (_, i) => makeContent(1000 + i * 37, i + 1));
    const srv: TestServer = await startServer((req, res) => {
      const i = Number(new URL(req.url!, 'http://x').searchParams.get('i'));
      return serveRange(srv, req, res, files[i]!);
    });
    cleanups.push(() => srv.close());
    const d = dirs();
    const reqs = files.map((c, i) => blobRequest(c, `${srv.url}/f?i=${i}`, { label: `f${i}` }));
    const got = await fetchBlobs([...reqs, reqs[3]!], { ...d, connections: 3, env: {} });
    expect(got).toHaveLength(31);
    expect(got[30]).toEqual(got[3]);
    for (let i = 0; i < 30; i++) expect(readFileSync(got[i]!.path).equals(files[i]!)).toBe(true);
    expect(srv.requests.length).toBe(30);
    expect(srv.sockets.size).toBeLessThanOrEqual(3);
  });

  it('verifies by git blob id when no sha256 is known, and handles empty files', async () => {
    const content = Buffer.from('{"architectures": ["Qwen2ForCausalLM"]}\n');
    const empty = Buffer.alloc(0);
    const srv = await origin(content);
    const d = dirs();
    const got = await fetchBlobs(
      [
        { key: { kind: 'git', gitOid: gitOid(content) }, label: 'config.json', size: content.length, gitOid: gitOid(content), origin: { url: `${srv.url}/c`, hubHeaders: {} } },
        { key: { kind: 'git', gitOid: gitOid(empty) }, label: 'empty', size: 0, gitOid: gitOid(empty), origin: { url: `${srv.url}/e`, hubHeaders: {} } },
      ],
      { ...d, env: {} },
    );
    expect(got[0]!.sha256).toBe(sha256(content));
    expect(readFileSync(got[0]!.path, 'utf8')).toBe(content.toString());
    expect(got[1]!.sha256).toBe(sha256(empty));
    expect(srv.requests.length).toBe(1);
  });

  it('a verified but unpublished partial is reused without the network; a renamed-away one is refetched', async () => {
    const content = makeContent(3 * MiB, 3);
    const srv = await origin(content);
    const d = dirs();
    const opts = { ...d, chunkSize: MiB, env: {} };
    const [a] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], opts);
    const sent = srv.bytesSent();
    const [b] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], opts);
    expect(b!.path).toBe(a!.path);
    expect(srv.bytesSent()).toBe(sent);
    expect((await completedRanges(d.stateDir, a!.key))?.ranges).toEqual([[0, content.length]]);
    // The store renames the file away and (here) forgets to call forgetBlob.
    renameSync(a!.path, join(d.root, 'published'));
    expect(await completedRanges(d.stateDir, a!.key)).toBeUndefined();
    const [c] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], opts);
    expect(readFileSync(c!.path).equals(content)).toBe(true);
    expect(srv.bytesSent()).toBe(2 * content.length);
    forgetBlob(c!.key, d);
    expect(await completedRanges(d.stateDir, c!.key)).toBeUndefined();
  });

  it('splits the last in-flight range so idle connections help finish (end game)', async () => {
    // Two connections, one 32 MiB span: the second connection can only help by taking half.
    const content = makeContent(32 * MiB, 5);
    const srv: TestServer = await startServer((req, res) => serveRange(srv, req, res, content, { rate: 32 * MiB }));
    cleanups.push(() => srv.close());
    const d = dirs();
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], { ...d, connections: 2, chunkSize: 32 * MiB, env: {} });
    expect(got!.sha256).toBe(sha256(content));
    expect(srv.requests.length).toBeGreaterThanOrEqual(2);
    expect(srv.requests.some((r) => r.range && !r.range.startsWith('bytes=0-'))).toBe(true);
    // The shortened request stops at its new end: what is wasted is what was in flight in the
    // socket at that moment (a few MiB on loopback), not the 16 MiB that were handed over.
    expect(srv.bytesSent()).toBeLessThan(content.length + 12 * MiB);
    expect(existsSync(got!.path)).toBe(true);
    expect(readdirSync(d.partialDir)).toHaveLength(1);
  });

  it('records 1 MiB blocks, unsynced by default and synced with fsync: true', async () => {
    const content = makeContent(5 * MiB + 1, 9);
    const srv = await origin(content);
    const d = dirs();
    const [a] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], { ...d, chunkSize: 4 * MiB, connections: 1, env: {} });
    const st = ResumeState.acquire(d.stateDir);
    try {
      expect(st.doneChunks(formatBlobKey(a!.key))).toEqual([0, 1, 2, 3, 4, 5]);
      expect(st.syncedChunks(formatBlobKey(a!.key))).toEqual([]);
      forgetBlob(a!.key, d);
      const d2 = dirs();
      const [b] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], { ...d2, chunkSize: 4 * MiB, connections: 1, env: {}, fsync: true });
      const st2 = ResumeState.acquire(d2.stateDir);
      try {
        expect(st2.syncedChunks(formatBlobKey(b!.key))).toEqual([0, 1, 2, 3, 4, 5]);
      } finally {
        st2.release();
      }
    } finally {
      st.release();
    }
    // Two spans of 4 MiB per pull, not six requests.
    expect(srv.requests.length).toBe(4);
  });
});
