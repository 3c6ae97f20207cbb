/**
 * Client-side: read an HTTP response body whole, but never more than a limit. Everything this
 * process reads from another party (hub APIs, S3 listings, peers) is bounded, so a hostile or
 * broken server cannot grow memory by answering without end (issue 12, item 7). Past the limit
 * the body is destroyed (the connection goes with it) and BodyTooLargeError is thrown; callers
 * turn it into their own error.
 */
import type { Dispatcher } from 'undici';

export class BodyTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`the answer is larger than ${formatLimit(limit)}`);
  }
}

export function formatLimit(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${bytes / (1024 * 1024)} MiB` : bytes >= 1024 ? `${bytes / 1024} KiB` : `${bytes} bytes`;
}

/** The body as text; a declared or actual length over `limit` throws BodyTooLargeError. */
export async function readBodyText(res: Pick<Dispatcher.ResponseData, 'body' | 'headers'>, limit: number): Promise<string> {
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    res.body.destroy();
    throw new BodyTooLargeError(limit);
  }
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > limit) throw new BodyTooLargeError(limit);
      parts.push(chunk);
    }
  } finally {
    if (n > limit) res.body.destroy();
  }
  return Buffer.concat(parts).toString('utf8');
}
