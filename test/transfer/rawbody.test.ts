import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createHash } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { OriginSession, createDispatcher, openRange } from '../../src/transfer/http.js';
import { MiB, makeContent, sha256 } from './helpers.js';

// The engine reads origin bodies through undici's dispatch API (RawBody), not a Readable: these
// tests pin the properties the Readable gave for free: backpressure, abort, early exit.

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface BodyServer {
  url: string;
  /** Bytes the server has handed to the kernel for the current response. */
  written(): number;
  closed(): Promise<void>;
}

/** Serves `content` in 64 KiB writes that respect 'drain', so it only moves as fast as the client reads. */
async function bodyServer(content: Buffer): Promise<BodyServer> {
  let written = 0;
  let onClose: () => void = () => undefined;
  const closed = new Promise<void>((r) => (onClose = r));
  const sockets = new Set<Socket>();
  const srv: Server = createServer((_req, res: ServerResponse) => {
    res.writeHead(200, { 'content-length': String(content.length) });
    let off = 0;
    const pump = () => {
      while (off < content.length) {
        const piece = content.subarray(off, off + 64 * 1024);
        off += piece.length;
        written = off;
        if (!res.write(piece)) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    res.on('close', onClose);
    pump();
  });
  srv.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  );
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/f`, written: () => written, closed: () => closed };
}

function dispatcher() {
  const d = createDispatcher(2, {});
  cleanups.push(() => d.destroy());
  return d;
}

/** Wait until `f()` stops changing (polled), up to a bound; returns the settled value. */
async function settle(f: () => number): Promise<number> {
  let last = -1;
  let same = 0;
  for (let i = 0; i < 200 && same < 5; i++) {
    await delay(40);
    const v = f();
    same = v === last ? same + 1 : 0;
    last = v;
  }
  return last;
}

describe('origin bodies over the dispatch API', () => {
  it('stops reading the socket while the consumer does not read, then delivers every byte', async () => {
    const content = makeContent(96 * MiB, 3);
    const srv = await bodyServer(content);
    const res = await openRange(dispatcher(), new OriginSession({ url: srv.url, hubHeaders: {} }), 'f', 0, undefined, new AbortController().signal);
    expect(res.status).toBe(200);
    // Nothing is consumed: the server stalls once the kernel buffers and our small queue are full.
    const stalledAt = await settle(srv.written);
    expect(stalledAt).toBeLessThan(48 * MiB);
    const h = createHash('sha256');
    let n = 0;
    for await (const piece of res.body) {
      h.update(piece);
      n += piece.length;
    }
    expect(n).toBe(content.length);
    expect(h.digest('hex')).toBe(sha256(content));
  });

  it('rejects the reader with the abort reason and closes the connection', async () => {
    const content = makeContent(64 * MiB, 4);
    const srv = await bodyServer(content);
    const ac = new AbortController();
    const res = await openRange(dispatcher(), new OriginSession({ url: srv.url, hubHeaders: {} }), 'f', 0, undefined, ac.signal);
    const reason = new Error('stop here');
    let n = 0;
    const read = (async () => {
      for await (const piece of res.body) {
        n += piece.length;
        if (n >= 4 * MiB) ac.abort(reason);
      }
    })();
    await expect(read).rejects.toBe(reason);
    await srv.closed();
    expect(n).toBeLessThan(content.length);
  });

  it('leaving the loop early closes the connection instead of reading the rest', async () => {
    const content = makeContent(64 * MiB, 5);
    const srv = await bodyServer(content);
    const res = await openRange(dispatcher(), new OriginSession({ url: srv.url, hubHeaders: {} }), 'f', 0, undefined, new AbortController().signal);
    let n = 0;
    for await (const piece of res.body) {
      n += piece.length;
      if (n >= MiB) break;
    }
    await srv.closed();
    expect(srv.written()).toBeLessThan(content.length);
  });
});
