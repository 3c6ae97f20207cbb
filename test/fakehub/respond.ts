import { createReadStream } from 'node:fs';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { alwaysApplicable, type FaultQueue } from './faults.js';
import type { FileEntry } from './repos.js';
import type { FaultSpec, RequestLogEntry } from './types.js';

export interface HubState {
  faults: FaultQueue;
  rate(): number | undefined;
  /** Responses parked by a 'stall' fault; close() destroys their sockets. */
  stalled: Set<ServerResponse>;
}

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  host: 'hub' | 'cdn';
  url: URL;
  /** Decoded URL path. */
  urlPath: string;
  entry: RequestLogEntry;
  state: HubState;
}

export type ByteRange = { start: number; end: number };

/**
 * RFC 9110 single byte range. `undefined`: no (usable) Range header, answer 200 with everything.
 * 'unsatisfiable': answer 416. Multiple ranges are ignored like many object stores do.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return undefined;
  const [, a, b] = m;
  if (a === '' && b === '') return undefined;
  if (a === '') {
    const n = Number(b);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (b !== '' && Number(b) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

function writeHead(ctx: Ctx, status: number, headers: OutgoingHttpHeaders): void {
  ctx.entry.status = status;
  ctx.res.writeHead(status, headers);
}

export function cdnErrorXml(code: string, message: string): Buffer {
  return Buffer.from(
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>fakehub</RequestId></Error>`,
  );
}

function faultResponse(ctx: Ctx, fault: FaultSpec): boolean {
  if (fault.kind === 'status') {
    const status = fault.status ?? 503;
    const headers: OutgoingHttpHeaders = {};
    if (fault.retryAfter !== undefined) headers['retry-after'] = String(fault.retryAfter);
    const body =
      ctx.host === 'cdn'
        ? cdnErrorXml(status === 503 ? 'SlowDown' : 'InternalError', `injected status ${status}`)
        : Buffer.from(JSON.stringify({ error: `injected status ${status}` }));
    headers['content-type'] = ctx.host === 'cdn' ? 'application/xml' : 'application/json';
    headers['content-length'] = body.length;
    writeHead(ctx, status, headers);
    countedEnd(ctx, ctx.req.method === 'HEAD' ? undefined : body);
    return true;
  }
  if (fault.kind === 'expireSigned') {
    sendExpired(ctx);
    return true;
  }
  return false;
}

export function sendExpired(ctx: Ctx): void {
  const body = cdnErrorXml('AccessDenied', 'Request has expired');
  writeHead(ctx, 403, { 'content-type': 'application/xml', 'content-length': body.length });
  countedEnd(ctx, ctx.req.method === 'HEAD' ? undefined : body);
}

function countedEnd(ctx: Ctx, body: Buffer | undefined): void {
  if (!body || body.length === 0) {
    ctx.res.end();
    return;
  }
  ctx.res.end(body, () => {
    ctx.entry.bodyBytes += body.length;
  });
}

/** A response with no body at all (HEAD, redirects). Only status/expireSigned faults apply. */
export function sendEmpty(ctx: Ctx, status: number, headers: OutgoingHttpHeaders, filePath?: string): void {
  const fault = pickFault(ctx, filePath, (f) => alwaysApplicable(f.kind, ctx.host));
  if (fault && faultResponse(ctx, fault)) return;
  writeHead(ctx, status, headers);
  ctx.res.end();
}

/** A small in-memory response (JSON, XML, errors). Body faults apply to it too, by URL path. */
export function sendBuffer(ctx: Ctx, status: number, headers: OutgoingHttpHeaders, body: Buffer, filePath?: string): void {
  const isGet = ctx.req.method !== 'HEAD';
  const fault = pickFault(
    ctx,
    filePath,
    (f) =>
      alwaysApplicable(f.kind, ctx.host) ||
      (isGet && (f.kind === 'reset' || f.kind === 'stall')) ||
      (isGet && f.kind === 'corrupt' && (f.offset ?? 0) < body.length),
  );
  if (fault && faultResponse(ctx, fault)) return;
  writeHead(ctx, status, { ...headers, 'content-length': body.length });
  if (!isGet) {
    ctx.res.end();
    return;
  }
  void streamBody(ctx, bufferChunks(body, 0, body.length - 1), 0, fault);
}

export function sendJson(ctx: Ctx, status: number, value: unknown, headers: OutgoingHttpHeaders = {}): void {
  sendBuffer(ctx, status, { 'content-type': 'application/json; charset=utf-8', ...headers }, Buffer.from(JSON.stringify(value)));
}

/** A file download with Range support and every body fault. */
export function sendFile(ctx: Ctx, file: FileEntry, headers: OutgoingHttpHeaders): void {
  const isGet = ctx.req.method !== 'HEAD';
  const rangeHeader = ctx.req.headers.range;
  let range = parseRange(rangeHeader, file.size);
  const covered = (offset: number): boolean => {
    if (range === 'unsatisfiable') return false;
    const r = range ?? { start: 0, end: file.size - 1 };
    return offset >= r.start && offset <= r.end;
  };
  const fault = pickFault(
    ctx,
    file.path,
    (f) =>
      alwaysApplicable(f.kind, ctx.host) ||
      (isGet && (f.kind === 'reset' || f.kind === 'stall')) ||
      (isGet && f.kind === 'corrupt' && covered(f.offset ?? 0)) ||
      (f.kind === 'ignoreRange' && range !== undefined),
  );
  if (fault && faultResponse(ctx, fault)) return;
  if (fault?.kind === 'ignoreRange') range = undefined;

  const base: OutgoingHttpHeaders = { 'accept-ranges': 'bytes', ...headers };
  if (range === 'unsatisfiable') {
    writeHead(ctx, 416, { ...base, 'content-range': `bytes */${file.size}`, 'content-length': 0 });
    ctx.res.end();
    return;
  }
  const { start, end } = range ?? { start: 0, end: file.size - 1 };
  const length = end - start + 1;
  if (range) {
    writeHead(ctx, 206, { ...base, 'content-range': `bytes ${start}-${end}/${file.size}`, 'content-length': length });
  } else {
    writeHead(ctx, 200, { ...base, 'content-length': file.size });
  }
  if (!isGet || length <= 0) {
    ctx.res.end();
    return;
  }
  const chunks = file.file !== undefined ? fileChunks(file.file, start, end) : bufferChunks(file.buffer!, start, end);
  void streamBody(ctx, chunks, start, fault);
}

function pickFault(ctx: Ctx, filePath: string | undefined, applicable: (f: FaultSpec) => boolean): FaultSpec | undefined {
  const fault = ctx.state.faults.take({
    host: ctx.host,
    urlPath: ctx.urlPath,
    ...(filePath === undefined ? {} : { filePath }),
    applicable,
  });
  if (fault) ctx.entry.fault = fault.kind;
  return fault;
}

async function* bufferChunks(buf: Buffer, start: number, end: number): AsyncGenerator<Buffer> {
  const step = 64 * 1024;
  for (let i = start; i <= end; i += step) yield buf.subarray(i, Math.min(end + 1, i + step));
}

async function* fileChunks(path: string, start: number, end: number): AsyncGenerator<Buffer> {
  const stream = createReadStream(path, { start, end, highWaterMark: 256 * 1024 });
  try {
    for await (const chunk of stream) yield chunk as Buffer;
  } finally {
    stream.destroy();
  }
}

/**
 * Writes the body honouring backpressure, the per-connection rate cap and the fault, and counts
 * only bytes the socket accepted. A client that goes away simply ends the loop.
 */
async function streamBody(ctx: Ctx, chunks: AsyncGenerator<Buffer>, fileOffset: number, fault: FaultSpec | undefined): Promise<void> {
  const { res } = ctx;
  let closed = false;
  res.once('close', () => {
    closed = true;
  });
  const cut = fault && (fault.kind === 'reset' || fault.kind === 'stall') ? Math.max(0, fault.afterBytes ?? 0) : Infinity;
  const corruptAt = fault?.kind === 'corrupt' ? (fault.offset ?? 0) : -1;
  let sent = 0;
  let offset = fileOffset;
  const t0 = Date.now();
  let paced = 0;
  res.flushHeaders();

  const write = (chunk: Buffer): Promise<void> =>
    new Promise((resolve) => {
      const ok = res.write(chunk, (err) => {
        if (!err) ctx.entry.bodyBytes += chunk.length;
        if (ok) resolve();
      });
      if (!ok) {
        const done = (): void => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.on('drain', done);
        res.on('close', done);
      }
    });

  try {
    for await (let chunk of chunks) {
      if (closed || sent >= cut) break;
      if (corruptAt >= offset && corruptAt < offset + chunk.length) {
        chunk = Buffer.from(chunk);
        chunk[corruptAt - offset] = chunk[corruptAt - offset]! ^ 0xff;
      }
      offset += chunk.length;
      if (sent + chunk.length > cut) chunk = chunk.subarray(0, cut - sent);
      let pos = 0;
      while (pos < chunk.length && !closed) {
        const rate = ctx.state.rate();
        const slice = rate ? Math.max(1024, Math.min(64 * 1024, Math.floor(rate / 20))) : chunk.length;
        const piece = chunk.subarray(pos, pos + slice);
        await write(piece);
        pos += piece.length;
        sent += piece.length;
        if (rate) {
          paced += piece.length;
          const due = t0 + (paced / rate) * 1000;
          const wait = due - Date.now();
          if (wait > 0) await sleep(wait);
        }
      }
    }
  } catch {
    // A source error mid-body can only be signalled by cutting the connection.
    res.destroy();
    return;
  } finally {
    await chunks.return(undefined);
  }
  if (closed) return;
  if (sent >= cut && fault?.kind === 'stall') {
    // Silent but open: the client has to notice by itself.
    ctx.state.stalled.add(res);
    res.once('close', () => ctx.state.stalled.delete(res));
    return;
  }
  if (sent >= cut && fault?.kind === 'reset') {
    // Let what was written reach the kernel first, so "after N bytes" holds on the wire.
    await new Promise<void>((resolve) => res.write(Buffer.alloc(0), () => resolve()));
    if (fault.rst) res.socket?.resetAndDestroy();
    res.destroy();
    return;
  }
  res.end();
}
