/**
 * Sending one blob's bytes to a client. From the store when it is there (verified, at disk
 * speed); otherwise while it downloads: bytes go out as soon as they are durable in the partial
 * file, so a client with a short read timeout never waits for the whole file. The response's last
 * byte waits until the whole file verified: a response that completes carries only verified
 * bytes. If verification fails, or the bytes already sent stop counting, the connection is reset
 * (TCP RST, not FIN: a FIN would let a client resume and splice good bytes onto bad ones).
 */
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { BlobKey } from '../core/blob-key.js';
import { drained } from '../http/respond.js';
import { durableEnd, type BlobProgress, type BlobProgressState } from './progress.js';

export interface BlobTarget {
  key: BlobKey;
  size: number;
  /** Path of the verified content in the store, when it is there. */
  stored(): Promise<string | undefined>;
  /** Make sure a fetch is under way. */
  ensure(): void;
}

export interface StreamDeps {
  progress: BlobProgress;
  /** Client-visible counters. */
  onBytes(n: number): void;
  onWaiting(delta: 1 | -1): void;
  signal: AbortSignal;
  /** Give up on a download that shows no change this long (default 2 min). */
  stallMs?: number;
}

export interface Head {
  status: number;
  headers: OutgoingHttpHeaders;
}

/** Longest a client waits for its first bytes before it gets the headers anyway. */
const FIRST_BYTES_MS = 5_000;
const READ_SIZE = 1024 * 1024;

/** Abort the connection with a TCP reset. */
export function resetConnection(res: ServerResponse): void {
  const sock = res.socket;
  if (sock && typeof sock.resetAndDestroy === 'function' && !sock.destroyed) sock.resetAndDestroy();
  res.destroy();
}

/** Send `[start, end)` of a blob already in the store. */
export async function sendStored(res: ServerResponse, head: Head, path: string, start: number, end: number, deps: Pick<StreamDeps, 'onBytes'>): Promise<void> {
  res.writeHead(head.status, head.headers);
  if (end <= start) return void res.end();
  const rs = createReadStream(path, { start, end: end - 1, highWaterMark: READ_SIZE });
  try {
    await pipeline(rs, res);
  } catch {
    res.destroy();
  } finally {
    deps.onBytes(rs.bytesRead);
  }
}

/**
 * Send `[start, end)` of a blob that is (or is about to be) downloading. `fail` writes a hub-style
 * error when nothing was sent yet. Resolves when the response ended one way or another.
 */
export async function sendFollowing(
  res: ServerResponse,
  head: Head,
  target: BlobTarget,
  start: number,
  end: number,
  deps: StreamDeps,
  fail: (message: string) => void,
): Promise<void> {
  const reader = new Follower(res, head, target, start, end, deps, fail);
  try {
    await reader.run();
  } finally {
    await reader.close();
  }
}

class Follower {
  private pos: number;
  private generation = -1;
  private fh: FileHandle | undefined;
  private fhPath: string | undefined;
  private closed = false;
  private readonly firstDeadline = Date.now() + FIRST_BYTES_MS;
  private lastChange = Date.now();

  constructor(
    private readonly res: ServerResponse,
    private readonly head: Head,
    private readonly target: BlobTarget,
    private readonly start: number,
    private readonly end: number,
    private readonly deps: StreamDeps,
    private readonly fail: (message: string) => void,
  ) {
    this.pos = start;
    res.once('close', () => (this.closed = true));
  }

  async close(): Promise<void> {
    await this.fh?.close().catch(() => undefined);
    this.fh = undefined;
  }

  async run(): Promise<void> {
    this.target.ensure();
    while (!this.closed && !this.deps.signal.aborted) {
      const s = this.deps.progress.get(this.target.key);
      if (s?.failed) return this.abort(`download failed: ${s.failed.message}`);
      if (s && s.generation !== this.generation) {
        // Bytes already sent came from a generation that no longer counts: nothing can save them.
        if (this.generation >= 0 && this.pos > this.start) return resetConnection(this.res);
        this.generation = s.generation;
        await this.close();
      }
      const verified = s?.verified === true || (s === undefined && (await this.target.stored()) !== undefined);
      const limit = verified ? this.end : Math.min(this.end - 1, s ? durableEnd(s.ranges, this.pos) : this.pos);
      if (limit > this.pos || (verified && this.pos >= this.end)) {
        if (!(await this.send(limit, s, verified))) return;
        if (this.pos >= this.end) return void this.res.end();
        continue;
      }
      if (!this.res.headersSent && Date.now() >= this.firstDeadline) {
        this.res.writeHead(this.head.status, this.head.headers);
        this.res.flushHeaders();
      }
      if (Date.now() - Math.max(this.lastChange, s?.updatedAt ?? 0) > (this.deps.stallMs ?? 120_000)) return this.abort('the download stalled');
      this.deps.onWaiting(1);
      try {
        await this.deps.progress.wait(this.target.key, 1000, this.deps.signal);
      } finally {
        this.deps.onWaiting(-1);
      }
    }
    if (!this.res.writableEnded) resetConnection(this.res);
  }

  private abort(message: string): void {
    if (this.res.headersSent) resetConnection(this.res);
    else this.fail(message);
  }

  /** Write `[pos, limit)` (`final`: of a verified file); false when the response is gone. */
  private async send(limit: number, s: BlobProgressState | undefined, final: boolean): Promise<boolean> {
    this.lastChange = Date.now();
    const fh = limit > this.pos ? await this.file(s) : undefined;
    if (limit > this.pos && !fh) return this.abort('the downloaded file vanished'), false;
    if (!this.res.headersSent) this.res.writeHead(this.head.status, this.head.headers);
    if (!fh) return true;
    while (this.pos < limit && !this.closed) {
      const buf = Buffer.allocUnsafe(Math.min(READ_SIZE, limit - this.pos));
      const { bytesRead } = await fh.read(buf, 0, buf.length, this.pos);
      if (bytesRead === 0) return resetConnection(this.res), false;
      // The engine may have thrown these bytes away while we read them (never once they verified).
      if (!final && (this.deps.progress.get(this.target.key)?.generation ?? this.generation) !== this.generation) return resetConnection(this.res), false;
      this.pos += bytesRead;
      this.deps.onBytes(bytesRead);
      if (!this.res.write(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))) await drained(this.res);
    }
    return !this.closed;
  }

  /** The partial file being written, or the store's copy once it moved there. */
  private async file(s: BlobProgressState | undefined): Promise<FileHandle | undefined> {
    const want = s?.path;
    if (this.fh && (want === undefined || want === this.fhPath || s?.verified)) return this.fh;
    await this.close();
    // A verified file is being committed: between the partial's removal and the store's git-oid
    // alias (small HF files are known by it) neither name finds it for a moment.
    for (let attempt = 0; attempt < (s?.verified ? 50 : 1); attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 100));
      for (const p of [want, await this.target.stored()]) {
        if (!p) continue;
        try {
          this.fh = await open(p, 'r');
          this.fhPath = p;
          return this.fh;
        } catch {
          // Renamed into the store meanwhile: try the store's copy.
        }
      }
    }
    return undefined;
  }
}
