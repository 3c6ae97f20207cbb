import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FileEntry } from './repos.js';
import { cdnErrorXml, sendBuffer, sendExpired, sendFile, type Ctx } from './respond.js';

/**
 * The "CDN": a second host serving LFS blobs by sha256 under signed, expiring URLs, answering
 * like an object store (XML errors, no auth header needed or wanted).
 */
export class Cdn {
  private readonly secret = randomBytes(32);
  /** sha256 -> a file with that content (any repo). */
  readonly blobs = new Map<string, FileEntry>();

  constructor(
    private readonly origin: () => string,
    private readonly ttlMs: () => number,
  ) {}

  private sign(pathname: string, path: string, expires: string): string {
    return createHmac('sha256', this.secret).update(`${pathname}\n${path}\n${expires}`).digest('hex');
  }

  signedUrl(repoId: string, file: FileEntry): string {
    const pathname = `/lfs/${repoId}/${file.sha256}`;
    const expires = String(Date.now() + this.ttlMs());
    const sig = this.sign(pathname, file.path, expires);
    const q = new URLSearchParams({ path: file.path, expires, sig });
    return `${this.origin()}${pathname}?${q.toString()}`;
  }

  handle(ctx: Ctx): void {
    const m = /^\/lfs\/[^/]+\/[^/]+\/([0-9a-f]{64})$/.exec(ctx.url.pathname);
    if (!m || (ctx.req.method !== 'GET' && ctx.req.method !== 'HEAD')) {
      sendXml(ctx, 404, 'NoSuchKey', 'The specified key does not exist.');
      return;
    }
    const path = ctx.url.searchParams.get('path') ?? '';
    const expires = ctx.url.searchParams.get('expires') ?? '';
    const sig = ctx.url.searchParams.get('sig') ?? '';
    ctx.entry.path = path;
    const want = Buffer.from(this.sign(ctx.url.pathname, path, expires), 'hex');
    const got = Buffer.from(sig, 'hex');
    if (got.length !== want.length || !timingSafeEqual(got, want)) {
      sendXml(ctx, 403, 'AccessDenied', 'Invalid signature', path);
      return;
    }
    if (!(Number(expires) > Date.now())) {
      sendExpired(ctx);
      return;
    }
    const blob = this.blobs.get(m[1]!);
    if (!blob) {
      sendXml(ctx, 404, 'NoSuchKey', 'The specified key does not exist.', path);
      return;
    }
    const name = path.split('/').pop() ?? 'blob';
    sendFile(ctx, { ...blob, path }, {
      'content-type': 'application/octet-stream',
      etag: `"${blob.sha256}"`,
      'last-modified': new Date(1_700_000_000_000).toUTCString(),
      'content-disposition': `inline; filename*=UTF-8''${encodeURIComponent(name)}; filename="${name.replace(/[^\x20-\x7e]|"/g, '_')}"`,
      'cache-control': 'public, max-age=604800, immutable',
    });
  }
}

function sendXml(ctx: Ctx, status: number, code: string, message: string, filePath?: string): void {
  sendBuffer(ctx, status, { 'content-type': 'application/xml' }, cdnErrorXml(code, message), filePath);
}
