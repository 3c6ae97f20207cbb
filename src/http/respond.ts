/**
 * Server-side HTTP plumbing shared by every API this process serves (the daemon's, the peers'):
 * JSON and text answers, and bounded JSON request bodies. Above node:http, below every route.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** An answer a handler chooses by throwing: the router sends `{error: message}` with `status` (and `headers`). */
export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

/**
 * Resolve when `res` can take more bytes again (drain), or will never (closed, or `signal`
 * aborted): a writer that awaits this after `write()` returned false holds at most one buffer.
 */
export function drained(res: ServerResponse, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
    signal?.addEventListener('abort', done, { once: true });
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

export function sendText(res: ServerResponse, status: number, body: string, contentType = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

/**
 * Read a JSON request body of at most `limit` bytes; HttpError 400/413/415 otherwise. The
 * content-type must say JSON: a browser sends a cross-site form post (text/plain, form encoding)
 * without asking first, but never application/json, so this keeps other sites' pages from driving
 * the API through a user's browser.
 */
export async function readJson(req: IncomingMessage, limit = 64 * 1024): Promise<unknown> {
  const type = req.headers['content-type'];
  if (!type || !/^application\/(json|[\w.+-]+\+json)\b/i.test(type)) throw new HttpError(415, 'expected a JSON body with content-type: application/json');
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > limit) throw new HttpError(413, `request body larger than ${limit} bytes`);
    chunks.push(c as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new HttpError(400, 'expected a JSON body');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `invalid JSON: ${(e as Error).message}`);
  }
}
