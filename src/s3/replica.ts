/**
 * Buckets as private replicas of the hubs. `push --replica s3://B/P` writes a revision under
 * `P/<hub>/<ORG>/<NAME>/<commit>/`; a pull of that hub ref with `--replica s3://B/P` (or the daemon's
 * `replicas:`) then reads each file from the bucket before the hub.
 *
 * The replica is a ChunkSource, the same seam peers use: the engine asks it for each range before
 * the origin; whatever it lacks, refuses or breaks off comes from the hub; and it is trusted for
 * nothing: the whole file is checked against the hub's SHA-256 (or git blob id), and a mismatch
 * refetches from the hub only. The hub still gives the listing and the hashes; a replica never
 * decides what a revision contains.
 */
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { request, type Dispatcher } from 'undici';
import type { FileEntry, Manifest } from '../core/manifest.js';
import { formatS3Location, type ModelRef, type S3Location } from '../core/ref.js';
import { blobKeyOf, formatBlobKey } from '../core/blob-key.js';
import { proxyAwareDispatcher, type ChunkSource, type ChunkSourceRequest } from '../transfer/index.js';
import { S3Client } from './client.js';
import { MANIFEST_NAME, parseManifest } from './manifest.js';
import { s3Settings } from './settings.js';

/** `PREFIX/<hub>/<ORG>/<NAME>/<commit>`: where a replica keeps one revision of a hub repo. */
export function replicaPrefix(prefix: string, ref: Pick<ModelRef, 'hub' | 'org' | 'name'>, commit: string): string {
  return `${prefix}/${ref.hub}/${ref.org}/${ref.name}/${commit}`;
}

interface Copy {
  client: S3Client;
  bucket: string;
  key: string;
  etag: string;
  size: number;
}

export interface ReplicaSource extends ChunkSource {
  /** Files of the pull a replica holds, and their bytes. */
  readonly files: number;
  readonly bytes: number;
  close(): Promise<void>;
}

export interface ReplicaOptions {
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  logger?: Logger;
  connections?: number;
}

/**
 * Look for the pull's files in each replica (first replica wins per file). Undefined when none holds
 * any. A replica that cannot be read (no such bucket, refused credentials, unreachable) is skipped
 * with a warning: a replica may speed a pull up, never make it fail.
 */
export async function findReplicaCopies(replicas: readonly S3Location[], manifest: Manifest, files: readonly FileEntry[], opts: ReplicaOptions): Promise<ReplicaSource | undefined> {
  const log = opts.logger?.child({ module: 'replica' });
  const dispatcher = proxyAwareDispatcher(opts.env, { connections: Math.max(1, opts.connections ?? 24), headersTimeout: 0, bodyTimeout: 0 });
  const client = new S3Client(s3Settings(opts.env), dispatcher);
  const copies = new Map<string, Copy>();
  // Files the hub gives no hash for cannot be checked: they always come from the hub.
  const wanted = files.filter((f) => f.sha256 || f.gitOid);
  for (const loc of replicas) {
    const prefix = `${replicaPrefix(loc.prefix, manifest.ref, manifest.commit)}/`;
    const where = `s3://${loc.bucket}/${prefix}`;
    try {
      const listed = new Map((await client.list(loc.bucket, prefix, opts.signal)).map((o) => [o.key.slice(prefix.length), o]));
      // The replica's manifest, when present, tells which copies are known not to match the hub:
      // no point fetching those.
      const m = listed.has(MANIFEST_NAME) ? await client.getText(loc.bucket, prefix + MANIFEST_NAME, opts.signal) : undefined;
      const vouched = m ? new Map(parseManifest(m.text, where + MANIFEST_NAME).files.map((f) => [f.path, f])) : undefined;
      for (const f of wanted) {
        const key = formatBlobKey(blobKeyOf(f, manifest.commit));
        const o = listed.get(f.path);
        if (copies.has(key) || !o || o.size !== f.size) continue;
        const v = vouched?.get(f.path);
        if (v && ((f.sha256 && v.sha256 !== f.sha256) || (!f.sha256 && f.gitOid && v.gitOid && v.gitOid !== f.gitOid))) {
          log?.warn({ replica: where, file: f.path }, 'the replica holds another version of this file; it comes from the hub');
          continue;
        }
        copies.set(key, { client, bucket: loc.bucket, key: o.key, etag: o.etag, size: o.size });
      }
    } catch (e) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      log?.warn({ replica: formatS3Location(loc), err: (e as Error).message }, 'replica unusable; the hub serves what it would have');
    }
  }
  if (copies.size === 0) {
    await dispatcher.close().catch(() => undefined);
    return undefined;
  }
  let bytes = 0;
  for (const c of copies.values()) bytes += c.size;
  log?.info({ files: copies.size, bytes }, 'replica copies found');
  return new BucketChunkSource(copies, dispatcher, bytes, log);
}

class BucketChunkSource implements ReplicaSource {
  readonly name = 'replica';
  readonly byteSource = 'replica' as const;
  readonly files: number;

  constructor(
    private readonly copies: Map<string, Copy>,
    private readonly dispatcher: Dispatcher,
    readonly bytes: number,
    private readonly log: Logger | undefined,
  ) {
    this.files = copies.size;
  }

  async fetch(req: ChunkSourceRequest): Promise<AsyncIterable<Uint8Array> | undefined> {
    const c = this.copies.get(formatBlobKey(req.key));
    if (!c || c.size !== req.size) return undefined;
    const url = c.client.url(c.bucket, c.key);
    const headers = { range: `bytes=${req.start}-${req.end - 1}`, 'accept-encoding': 'identity', 'user-agent': 'swift-fetch/0.1' };
    Object.assign(headers, await c.client.sign('GET', url, { 'if-match': `"${c.etag}"` }));
    const res = await request(url, { method: 'GET', headers, dispatcher: this.dispatcher, signal: req.signal });
    const range = /^bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''));
    if (res.statusCode !== 206 || Number(range?.[1]) !== req.start) {
      await res.body.dump().catch(() => undefined);
      if (res.statusCode >= 500 || res.statusCode === 429) throw new Error(`replica answered ${res.statusCode}`);
      // Gone, rewritten (412) or refused: the hub serves this file from now on.
      this.copies.delete(formatBlobKey(req.key));
      this.log?.warn({ file: c.key, status: res.statusCode }, 'replica copy unavailable; using the hub');
      return undefined;
    }
    return res.body as Readable;
  }

  async close(): Promise<void> {
    await this.dispatcher.close().catch(() => undefined);
  }
}
