import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo, Socket } from 'node:net';
import { sha256Key } from '../../src/core/blob-key.js';
import type { BlobRequest } from '../../src/core/transfer.js';
import { mountTmpfs } from '../support/tmp.js';

export const MiB = 1024 * 1024;

/** Deterministic pseudo-random bytes (fast xorshift), so every test file has a known hash. */
export function makeContent(size: number, seed = 1): Buffer {
  const buf = Buffer.allocUnsafe(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  let i = 0;
  for (; i + 4 <= size; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  for (; i < size; i++) buf[i] = i & 0xff;
  return buf;
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

export function gitOid(b: Uint8Array): string {
  return createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
}

export function tempDir(prefix = 'sf-transfer-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface LoggedRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  range: string | undefined;
  socket: Socket;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void | Promise<void>;

export interface TestServer {
  url: string;
  host: string;
  port: number;
  requests: LoggedRequest[];
  /** Body bytes written to clients so far. */
  bytesSent(): number;
  /** Account body bytes (serveRange does it). */
  count(n: number): void;
  sockets: Set<Socket>;
  close(): Promise<void>;
}

/** A scripted origin: `handler` sees every request with its index (undici's test style). */
export async function startServer(handler: Handler, host = '127.0.0.1'): Promise<TestServer> {
  const requests: LoggedRequest[] = [];
  const sockets = new Set<Socket>();
  let sent = 0;
  const server: Server = createServer((req, res) => {
    const n = requests.length;
    requests.push({ method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, range: req.headers.range, socket: req.socket });
    Promise.resolve(handler(req, res, n)).catch((e) => {
      res.destroy(e as Error);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as AddressInfo).port;
  const allSockets = new Set<Socket>();
  server.on('connection', (s) => allSockets.add(s));
  return {
    url: `http://${host}:${port}`,
    host: `${host}:${port}`,
    port,
    requests,
    bytesSent: () => sent,
    count: (n) => {
      sent += n;
    },
    sockets: allSockets,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

export interface ServeOptions {
  etag?: string;
  /** Ignore Range and always send the whole file with 200. */
  ignoreRange?: boolean;
  /** Bytes per second per response (a CDN-style per-connection cap). */
  rate?: number;
  /** Destroy the socket after sending this many body bytes of this response. */
  resetAfter?: number;
  /** Stop sending (but keep the socket open) after this many body bytes. */
  stallAfter?: number;
  /** Flip the byte at this absolute offset if this response covers it. */
  corruptAt?: number;
  extraHeaders?: Record<string, string>;
}

export function parseRange(h: string | undefined, size: number): { start: number; end: number } | undefined {
  const m = h ? /^bytes=(\d+)-(\d*)$/.exec(h) : null;
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = m[2] === '' ? size : Math.min(size, Number(m[2]) + 1);
  return { start, end };
}

/** Serve `content` honouring Range (unless told not to), with optional faults, counting bytes. */
export async function serveRange(srv: TestServer, req: IncomingMessage, res: ServerResponse, content: Buffer, o: ServeOptions = {}): Promise<void> {
  const size = content.length;
  const r = o.ignoreRange ? undefined : parseRange(req.headers.range, size);
  const start = r?.start ?? 0;
  const end = r?.end ?? size;
  const headers: Record<string, string> = { 'content-length': String(end - start), 'accept-ranges': o.ignoreRange ? 'none' : 'bytes', ...o.extraHeaders };
  if (o.etag) headers.etag = `"${o.etag}"`;
  if (r) {
    if (start >= size) {
      res.writeHead(416, { 'content-range': `bytes */${size}` });
      res.end();
      return;
    }
    headers['content-range'] = `bytes ${start}-${end - 1}/${size}`;
    res.writeHead(206, headers);
  } else {
    res.writeHead(200, headers);
  }
  let body = content.subarray(start, end);
  if (o.corruptAt !== undefined && o.corruptAt >= start && o.corruptAt < end) {
    body = Buffer.from(body);
    body[o.corruptAt - start]! ^= 0xff;
  }
  const limit = Math.min(body.length, o.resetAfter ?? Infinity, o.stallAfter ?? Infinity);
  const piece = 64 * 1024;
  const t0 = performance.now();
  let off = 0;
  while (off < limit) {
    if (res.destroyed) return;
    const n = Math.min(piece, limit - off);
    const ok = res.write(body.subarray(off, off + n));
    srv.count(n);
    off += n;
    if (!ok) await new Promise<void>((resolve) => {
      const done = () => {
        res.off('drain', done);
        res.off('close', done);
        resolve();
      };
      res.on('drain', done);
      res.on('close', done);
    });
    if (o.rate) {
      const due = t0 + (off / o.rate) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
  if (o.resetAfter !== undefined && off < body.length) {
    res.socket?.destroy();
    return;
  }
  if (o.stallAfter !== undefined && off < body.length) return; // hold the socket open, send nothing
  res.end();
}

export function blobRequest(content: Buffer, url: string, extra: Partial<BlobRequest> = {}): BlobRequest {
  const h = sha256(content);
  return { key: sha256Key(h), label: 'model.safetensors', size: content.length, sha256: h, origin: { url, hubHeaders: {} }, ...extra };
}

/**
 * A store directory on its own small tmpfs (root only), for disk-full tests: `mnt` is the mount,
 * `stateDir` sits beside it on the ordinary disk. Unmounting and removal are pushed on `cleanups`.
 * Without the rights to mount: a failure in CI, else `skip` with the reason.
 */
export function tmpfsStore(size: string, skip: (why: string) => void, cleanups: Array<() => unknown>): { mnt: string; stateDir: string } {
  const t = tempDir();
  cleanups.push(t.cleanup);
  const mnt = join(t.dir, 'store');
  mkdirSync(mnt);
  mountTmpfs(mnt, size, skip, (undo) => cleanups.push(undo));
  return { mnt, stateDir: join(t.dir, 'state') };
}
