// Temporary single-stream fetcher used until src/transfer's engine lands (issue 3).
import { createWriteStream, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { request, type Dispatcher } from 'undici';
import { AuthError, IntegrityError, NetworkError, NotFoundError } from '../core/errors.js';
import { BlobHasher, checkDigests } from '../core/integrity.js';
import type { BlobRequest, FetchedBlob, TransferEvent } from '../core/transfer.js';

export async function simpleFetch(
  reqs: BlobRequest[],
  opts: { partialDir: string; dispatcher: Dispatcher; onEvent?: (e: TransferEvent) => void; signal?: AbortSignal },
): Promise<FetchedBlob[]> {
  const out: FetchedBlob[] = [];
  for (const r of reqs) {
    let url = r.origin.url;
    const hubHost = new URL(url).host;
    let res: Dispatcher.ResponseData<unknown> | undefined;
    for (let hop = 0; hop < 5; hop++) {
      const headers = new URL(url).host === hubHost ? r.origin.hubHeaders : {};
      const r0: Dispatcher.ResponseData<unknown> = await request(url, { dispatcher: opts.dispatcher, headers, signal: opts.signal } as Parameters<typeof request>[1]);
      res = r0;
      if (res.statusCode >= 300 && res.statusCode < 400 && res.headers.location) {
        await res.body.dump();
        url = new URL(String(res.headers.location), url).toString();
        continue;
      }
      break;
    }
    if (!res || res.statusCode !== 200) {
      const s = res?.statusCode;
      await res?.body.dump();
      if (s === 401 || s === 403) throw new AuthError(`download of ${r.label} refused (${s})`);
      if (s === 404) throw new NotFoundError(`${r.label} not found at the origin`);
      throw new NetworkError(`download of ${r.label} failed with status ${s}`);
    }
    opts.onEvent?.({ type: 'blob-start', key: r.key, label: r.label, size: r.size, resumedBytes: 0 });
    const hasher = new BlobHasher(r.size, !r.sha256 && Boolean(r.gitOid));
    const path = join(opts.partialDir, `${r.key.replace(':', '-')}.simple`);
    await pipeline(
      res.body,
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          hasher.update(chunk);
          opts.onEvent?.({ type: 'progress', key: r.key, bytes: chunk.length, source: 'origin' });
          cb(null, chunk);
        },
      }),
      createWriteStream(path),
    );
    const found = hasher.digest();
    const bad = checkDigests(r, found);
    if (bad || hasher.length !== r.size) {
      await fsp.rm(path, { force: true });
      throw new IntegrityError(`${r.label}: content does not match the hub's hash`, { expected: bad?.expected ?? `${r.size} bytes`, found: bad?.found ?? `${hasher.length} bytes`, path: r.label });
    }
    opts.onEvent?.({ type: 'blob-verified', key: r.key, label: r.label, size: r.size });
    out.push({ key: r.key, path, sha256: found.sha256, size: r.size });
  }
  return out;
}
