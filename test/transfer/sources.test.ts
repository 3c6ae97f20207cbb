import { afterEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { completedRanges, fetchBlobs, type ChunkSource } from '../../src/transfer/index.js';
import type { ByteSource, TransferEvent } from '../../src/core/transfer.js';
import { MiB, blobRequest, makeContent, serveRange, sha256, startServer, tempDir, type TestServer } from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function* pieces(b: Buffer, size = 64 * 1024): AsyncIterable<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

async function setup(content: Buffer) {
  const srv: TestServer = await startServer((req, res) => serveRange(srv, req, res, content));
  cleanups.push(() => srv.close());
  const t = tempDir();
  cleanups.push(t.cleanup);
  return { srv, partialDir: join(t.dir, 'partial'), stateDir: join(t.dir, 'state') };
}

describe('chunk sources (the P2P seam)', () => {
  it('takes the chunks a source has and the rest from the origin', async () => {
    const content = makeContent(8 * MiB, 61);
    const { srv, ...d } = await setup(content);
    const peer: ChunkSource = {
      name: 'peer-a',
      fetch: async ({ start, end }) => (Math.floor(start / MiB) % 2 === 0 ? pieces(content.subarray(start, end)) : undefined),
    };
    const events: TransferEvent[] = [];
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], { ...d, chunkSize: MiB, env: {}, chunkSources: [peer], onEvent: (e) => events.push(e) });
    expect(got!.sha256).toBe(sha256(content));
    expect(srv.bytesSent()).toBe(4 * MiB);
    const bySource: Record<ByteSource, number> = { origin: 0, peer: 0, replica: 0 };
    for (const e of events) if (e.type === 'progress') bySource[e.source] += e.bytes;
    // Each byte is credited to where it came from, though both sources write in the same second.
    expect(bySource).toEqual({ origin: 4 * MiB, peer: 4 * MiB, replica: 0 });
  });

  it('falls back to the origin where a failing source stopped', async () => {
    const content = makeContent(4 * MiB, 62);
    const { srv, ...d } = await setup(content);
    const flaky: ChunkSource = {
      name: 'flaky',
      fetch: async ({ start, end }) =>
        (async function* () {
          yield content.subarray(start, start + 100_000);
          throw new Error('peer went away');
        })() as AsyncIterable<Uint8Array>,
    };
    const short: ChunkSource = { name: 'short', fetch: async ({ start }) => pieces(content.subarray(start, start + 1000)) };
    const events: TransferEvent[] = [];
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], { ...d, chunkSize: MiB, env: {}, chunkSources: [flaky, short], onEvent: (e) => events.push(e) });
    expect(got!.sha256).toBe(sha256(content));
    // Each chunk took 101 000 bytes from the sources and the rest from the origin.
    expect(srv.bytesSent()).toBe(content.length - 4 * 101_000);
    const bySource: Record<ByteSource, number> = { origin: 0, peer: 0, replica: 0 };
    for (const e of events) if (e.type === 'progress') bySource[e.source] += e.bytes;
    expect(bySource).toEqual({ origin: content.length - 4 * 101_000, peer: 4 * 101_000, replica: 0 });
    expect(srv.requests.every((r) => /^bytes=\d*101000-/.test(r.range!) || /^bytes=\d+-/.test(r.range!))).toBe(true);
  });

  it('a poisoned source is caught by the hash and the file comes from the origin', async () => {
    const content = makeContent(2 * MiB, 63);
    const { srv, ...d } = await setup(content);
    const liar: ChunkSource = {
      name: 'liar',
      fetch: async ({ start, end }) => {
        const b = Buffer.from(content.subarray(start, end));
        b[0]! ^= 1;
        return pieces(b);
      },
    };
    const chunks: Array<[number, number]> = [];
    const events: TransferEvent[] = [];
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], {
      ...d,
      chunkSize: MiB,
      env: {},
      chunkSources: [liar],
      onEvent: (e) => events.push(e),
      onChunk: (c) => chunks.push([c.start, c.end]),
    });
    expect(got!.sha256).toBe(sha256(content));
    expect(readFileSync(got!.path).equals(content)).toBe(true);
    expect(events.some((e) => e.type === 'hash-mismatch')).toBe(true);
    expect(srv.bytesSent()).toBe(content.length);
    expect(chunks).toHaveLength(4);
    expect((await completedRanges(d.stateDir, got!.key))!.ranges).toEqual([[0, content.length]]);
  });
});
