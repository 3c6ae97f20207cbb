/**
 * `push`: upload a verified revision from the store to a bucket, then the manifest that vouches for
 * it. What the bucket already holds (same size, and the manifest's SHA-256 with the same ETag, or
 * the object's own whole-object SHA-256) is not sent again, so pushing a revision twice moves
 * nothing. The manifest goes last: a bucket without it holds an unfinished push.
 *
 * Every byte is checked by the bucket: a small file is one PUT carrying its SHA-256
 * (x-amz-checksum-sha256, which the store already knows), a large one a multipart upload whose
 * parts each carry theirs. A multipart upload resumes without local state: the bucket lists the
 * parts it holds with their checksums, and parts whose size and SHA-256 match ours are kept.
 * The whole file is hashed in the same pass that hashes the parts, and must match the store's
 * SHA-256 before the upload is completed, so a store blob that rotted on disk never becomes an
 * object (exit 5).
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { open } from 'node:fs/promises';
import pLimit from 'p-limit';
import type { Logger } from 'pino';
import { IntegrityError, StorageError } from '../core/errors.js';
import { formatRef, formatS3Location, type ModelRef, type S3Location } from '../core/ref.js';
import { storageError } from '../store/fsutil.js';
import { Store, type PublishRecord, type RecordFile } from '../store/store.js';
import { proxyAwareDispatcher, type RateLimiter } from '../transfer/index.js';
import { S3Client, type ListedObject } from './client.js';
import { MANIFEST_NAME, base64ToHex, buildManifest, hexToBase64, parseManifest, type BucketManifest, type BucketManifestFile } from './manifest.js';
import { PUSH_LEASE_NAME, holdBucketLease } from './lease.js';
import { replicaPrefix } from './replica.js';
import { s3Settings } from './settings.js';
import { DEFAULT_PART_SIZE, DEFAULT_PUSH_CONNECTIONS, MAX_PARTS, MIN_PART } from './limits.js';

export { DEFAULT_PART_SIZE, DEFAULT_PUSH_CONNECTIONS } from './limits.js';

const MiB = 1024 * 1024;
/** Bytes read from the store per piece of an upload body. */
const READ_PIECE = MiB;

export interface PushOptions {
  store: string;
  env?: NodeJS.ProcessEnv;
  limiter?: RateLimiter;
  /** Uploads (objects or parts) in flight at once. */
  connections?: number;
  /** Files larger than this go up as multipart uploads of parts this size. */
  partSize?: number;
  signal?: AbortSignal;
  logger?: Logger;
  onEvent?: (e: PushEvent) => void;
  /** Who holds the push lease in the bucket (default host:pid), and its ttl (tests shorten it). */
  holder?: string;
  leaseTtlMs?: number;
}

export type PushEvent =
  | { type: 'waiting'; holder: string }
  | { type: 'planned'; ref: string; commit: string; dest: string; files: number; bytesTotal: number; bytesToSend: number }
  | { type: 'progress'; bytesDone: number; bytesTotal: number }
  | { type: 'file-uploaded'; file: string; size: number; parts: number; partsKept: number }
  | { type: 'pushed'; dest: string; commit: string; bytesUploaded: number; alreadyComplete: boolean };

export interface PushResult {
  ref: ModelRef;
  commit: string;
  /** `s3://BUCKET/PREFIX` the revision now lives under. */
  dest: string;
  files: number;
  bytesUploaded: number;
  alreadyComplete: boolean;
}

export type PushTarget = { to: S3Location } | { replica: S3Location };

/** Where `target` puts a revision: the location itself, or the replica layout under it. */
export function pushLocation(target: PushTarget, ref: ModelRef, commit: string): S3Location {
  if ('to' in target) return target.to;
  return { bucket: target.replica.bucket, prefix: replicaPrefix(target.replica.prefix, ref, commit) };
}

export async function pushModel(ref: ModelRef, target: PushTarget, opts: PushOptions): Promise<PushResult> {
  const env = opts.env ?? process.env;
  const store = new Store(opts.store);
  const record = await store.findRecord(ref, ref.revision);
  const loc = pushLocation(target, ref, record.commit);
  const log = opts.logger?.child({ module: 'push', ref: formatRef(ref), dest: formatS3Location(loc) });
  const connections = Math.max(1, opts.connections ?? DEFAULT_PUSH_CONNECTIONS);
  // Headers come back only once a whole body went up, which --max-rate may stretch to minutes.
  const dispatcher = proxyAwareDispatcher(env, { connections, headersTimeout: 15 * 60_000, bodyTimeout: 120_000 });
  try {
    const client = new S3Client(s3Settings(env), dispatcher);
    // One pusher per prefix at a time; the others wait, then find the work done.
    const lease = await holdBucketLease(client, loc.bucket, `${loc.prefix}/${PUSH_LEASE_NAME}`, {
      holder: opts.holder ?? `${hostname()}:${process.pid}`,
      ...(opts.leaseTtlMs ? { ttlMs: opts.leaseTtlMs, skewMs: opts.leaseTtlMs } : {}),
      signal: opts.signal,
      logger: log,
      onWait: (holder) => opts.onEvent?.({ type: 'waiting', holder }),
    });
    try {
      return await new Push(client, store, record, ref, loc, connections, opts, log).run();
    } finally {
      await lease?.release();
    }
  } finally {
    await dispatcher.close().catch(() => undefined);
  }
}

class Push {
  private readonly slots;
  private readonly prefix: string;
  private sent = 0;
  private uploaded = 0;
  private bytesTotal = 0;
  private lastEmit = 0;

  constructor(
    private readonly client: S3Client,
    private readonly store: Store,
    private readonly record: PublishRecord,
    private readonly ref: ModelRef,
    private readonly loc: S3Location,
    connections: number,
    private readonly opts: PushOptions,
    private readonly log: Logger | undefined,
  ) {
    this.slots = pLimit(connections);
    this.prefix = `${loc.prefix}/`;
  }

  async run(): Promise<PushResult> {
    const { client, loc, record, opts } = this;
    const dest = formatS3Location(loc);
    const listed = new Map((await client.list(loc.bucket, this.prefix, opts.signal)).map((o) => [o.key, o]));
    const manifestKey = this.prefix + MANIFEST_NAME;
    let previous: BucketManifest | undefined;
    if (listed.has(manifestKey)) {
      const got = await client.getText(loc.bucket, manifestKey, opts.signal);
      // A manifest we cannot read is rewritten, not trusted.
      if (got) previous = tryParse(got.text, `s3://${loc.bucket}/${manifestKey}`, this.log);
    }
    const vouched = new Map(previous?.files.map((f) => [f.path, f]));

    const etags = new Map<string, string>();
    const todo: RecordFile[] = [];
    for (const f of record.files) {
      const have = await this.present(f, listed.get(this.prefix + f.path), vouched.get(f.path));
      if (have) etags.set(f.path, have);
      else todo.push(f);
    }
    // Objects of something else under the prefix would become files of the model for anyone who
    // pulls it: say so (deleting what we did not write is not push's call).
    const ours = new Set([manifestKey, this.prefix + PUSH_LEASE_NAME, ...record.files.map((f) => this.prefix + f.path)]);
    const strangers = [...listed.keys()].filter((k) => !ours.has(k));
    if (strangers.length > 0) {
      this.log?.warn({ objects: strangers.slice(0, 20), count: strangers.length }, 'the destination holds objects that are not part of this revision; a pull of the prefix will include them');
    }
    this.bytesTotal = todo.reduce((n, f) => n + f.size, 0);
    opts.onEvent?.({ type: 'planned', ref: formatRef(this.ref), commit: record.commit, dest, files: record.files.length, bytesTotal: record.bytes, bytesToSend: this.bytesTotal });
    this.log?.info({ files: todo.length, bytes: this.bytesTotal }, 'pushing');

    // Objects are about to change under the old manifest: take it away first, so no reader pairs
    // new objects with old hashes (a prefix without a manifest holds an unfinished push).
    if (todo.length > 0 && listed.has(manifestKey)) await client.delete(loc.bucket, manifestKey, opts.signal);
    const perFile = pLimit(4);
    await Promise.all(
      todo.map((f) =>
        perFile(async () => {
          etags.set(f.path, await this.upload(f));
        }),
      ),
    );

    const files: BucketManifestFile[] = record.files.map((f) => ({ path: f.path, size: f.size, sha256: f.sha256, etag: etags.get(f.path)!, ...(f.gitOid ? { gitOid: f.gitOid } : {}) }));
    const source = `${record.hub}://${record.org}/${record.name}@${record.commit}`;
    const unchanged = todo.length === 0 && previous !== undefined && previous.source === source && sameFiles(previous.files, files);
    if (!unchanged) {
      const text = JSON.stringify(buildManifest(source, record.commit, files), null, 2) + '\n';
      await client.put(loc.bucket, manifestKey, text, Buffer.byteLength(text), {
        sha256: hexToBase64(createHash('sha256').update(text).digest('hex')),
        contentType: 'application/json',
        signal: opts.signal,
      });
    }
    opts.onEvent?.({ type: 'pushed', dest, commit: record.commit, bytesUploaded: this.uploaded, alreadyComplete: unchanged });
    return { ref: this.ref, commit: record.commit, dest, files: record.files.length, bytesUploaded: this.uploaded, alreadyComplete: unchanged };
  }

  /** The ETag of an object that already holds exactly `f`, or undefined when it must be sent. */
  private async present(f: RecordFile, obj: ListedObject | undefined, m: BucketManifestFile | undefined): Promise<string | undefined> {
    if (!obj || obj.size !== f.size) return undefined;
    if (m && m.sha256 === f.sha256 && m.size === f.size && m.etag === obj.etag) return obj.etag;
    const head = await this.client.head(this.loc.bucket, obj.key, this.opts.signal);
    return head?.sha256 && base64ToHex(head.sha256) === f.sha256 && head.etag === obj.etag ? obj.etag : undefined;
  }

  private async upload(f: RecordFile): Promise<string> {
    const blob = this.store.blobPath(f.sha256);
    if (!(await this.store.hasBlob(f.sha256))) {
      throw new StorageError(`${f.path}: its blob ${f.sha256} is missing from the store ${this.store.root}; pull the model again`, 'ESF_BLOB_MISSING');
    }
    const key = this.prefix + f.path;
    const partSize = planPartSize(f.size, this.opts.partSize ?? DEFAULT_PART_SIZE);
    if (f.size <= partSize) {
      // One PUT: the bucket checks it against the SHA-256 the store verified, no hashing here.
      const etag = await this.slots(() => this.client.put(this.loc.bucket, key, this.body(blob, 0, f.size), f.size, { sha256: hexToBase64(f.sha256), signal: this.opts.signal }));
      this.done(f.size);
      this.opts.onEvent?.({ type: 'file-uploaded', file: f.path, size: f.size, parts: 1, partsKept: 0 });
      return etag;
    }
    return this.multipart(f, blob, key, partSize);
  }

  private async multipart(f: RecordFile, blob: string, key: string, partSize: number): Promise<string> {
    const { client, loc, opts } = this;
    const count = Math.ceil(f.size / partSize);
    // Resume the newest upload of this key whose parts fit our plan; drop the others.
    let uploadId: string | undefined;
    let held = new Map<number, { etag: string; sha256: string | undefined; size: number }>();
    for (const u of await client.listUploads(loc.bucket, key, opts.signal)) {
      if (uploadId === undefined) {
        const parts = await client.listParts(loc.bucket, key, u.uploadId, opts.signal).catch(() => undefined);
        if (parts && parts.every((p) => p.partNumber >= 1 && p.partNumber <= count && p.size === partLength(f.size, partSize, p.partNumber))) {
          uploadId = u.uploadId;
          held = new Map(parts.map((p) => [p.partNumber, p]));
          continue;
        }
      }
      await client.abortMultipart(loc.bucket, key, u.uploadId, opts.signal);
    }
    const id = uploadId ?? (await client.createMultipart(loc.bucket, key, opts.signal));
    // One sequential read hashes each part and the whole file; a part goes up as soon as its
    // SHA-256 is known, so hashing overlaps the uploads. The whole file must match the store's
    // SHA-256 before the upload is completed: a rotted blob never becomes an object.
    let kept = 0;
    const uploads: Array<Promise<{ partNumber: number; etag: string; sha256: string }>> = [];
    const whole = await hashParts(blob, f.size, partSize, opts.signal, (n, sha) => {
      const size = partLength(f.size, partSize, n);
      const have = held.get(n);
      if (have && have.sha256 === sha) {
        kept++;
        this.bytesTotal -= size;
        uploads.push(Promise.resolve({ partNumber: n, etag: have.etag, sha256: sha }));
        return;
      }
      const start = (n - 1) * partSize;
      const up = this.slots(() => client.uploadPart(loc.bucket, key, id, n, this.body(blob, start, start + size), size, sha, opts.signal)).then((etag) => {
        this.done(size);
        return { partNumber: n, etag, sha256: sha };
      });
      up.catch(() => undefined); // awaited below; never an unhandled rejection meanwhile
      uploads.push(up);
    }).catch(async (e: unknown) => {
      await Promise.allSettled(uploads);
      throw e;
    });
    const parts = await Promise.all(uploads);
    if (whole !== f.sha256) {
      await client.abortMultipart(loc.bucket, key, id, opts.signal).catch(() => undefined);
      throw new IntegrityError(`${f.path}: the store's copy no longer matches its SHA-256 (disk corruption?); not pushing it`, { expected: `sha256:${f.sha256}`, found: `sha256:${whole}`, path: f.path });
    }
    const etag = await client.completeMultipart(loc.bucket, key, id, parts, opts.signal);
    this.log?.info({ file: f.path, parts: parts.length, kept }, 'multipart upload complete');
    opts.onEvent?.({ type: 'file-uploaded', file: f.path, size: f.size, parts: parts.length, partsKept: kept });
    return etag;
  }

  /** A fresh stream of `[start, end)` of a store blob for each attempt, paced by the rate limiter. */
  private body(path: string, start: number, end: number): () => AsyncIterable<Uint8Array> {
    const { limiter, signal } = this.opts;
    return () => {
      const self = this;
      return (async function* () {
        const fh = await open(path, 'r').catch((e: unknown) => {
          throw storageError(e, path);
        });
        try {
          for (let pos = start; pos < end; ) {
            const buf = Buffer.allocUnsafe(Math.min(READ_PIECE, end - pos));
            const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
            if (bytesRead === 0) throw new StorageError(`${path} ended at byte ${pos}, expected ${end}`, 'ESF_STORAGE');
            const wait = limiter?.take(bytesRead, signal);
            if (wait) await wait;
            pos += bytesRead;
            self.progress(bytesRead);
            yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
          }
        } finally {
          await fh.close();
        }
      })();
    };
  }

  private progress(n: number): void {
    this.sent += n;
    const now = Date.now();
    if (now - this.lastEmit >= 250) {
      this.lastEmit = now;
      this.opts.onEvent?.({ type: 'progress', bytesDone: Math.min(this.sent, this.bytesTotal), bytesTotal: this.bytesTotal });
    }
  }

  private done(n: number): void {
    this.uploaded += n;
  }
}

/** Part size for a file: the wish, at least S3's minimum, and large enough to stay within 10,000 parts. */
export function planPartSize(size: number, wish: number): number {
  const atLeast = Math.ceil(size / MAX_PARTS / MiB) * MiB;
  return Math.max(MIN_PART, Math.floor(wish), atLeast);
}

function partLength(size: number, partSize: number, n: number): number {
  return Math.min(partSize, size - (n - 1) * partSize);
}

/**
 * One sequential read: each part's SHA-256 (base64, as S3 reports them) handed to `onPart` as soon
 * as it is known, and the whole file's SHA-256 (hex) returned at the end.
 */
async function hashParts(path: string, size: number, partSize: number, signal: AbortSignal | undefined, onPart: (n: number, sha256: string) => void): Promise<string> {
  const whole = createHash('sha256');
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw storageError(e, path);
  }
  try {
    const buf = Buffer.allocUnsafe(4 * MiB);
    let part = createHash('sha256');
    let inPart = 0;
    let n = 1;
    for (let pos = 0; pos < size; ) {
      signal?.throwIfAborted();
      const want = Math.min(buf.length, size - pos, partSize - inPart);
      const { bytesRead } = await fh.read(buf, 0, want, pos);
      if (bytesRead === 0) throw new StorageError(`${path} ended at byte ${pos}, expected ${size}`, 'ESF_STORAGE');
      const piece = buf.subarray(0, bytesRead);
      whole.update(piece);
      part.update(piece);
      pos += bytesRead;
      inPart += bytesRead;
      if (inPart === partSize || pos === size) {
        onPart(n++, part.digest('base64'));
        part = createHash('sha256');
        inPart = 0;
      }
    }
  } finally {
    await fh.close();
  }
  return whole.digest('hex');
}

function sameFiles(a: readonly BucketManifestFile[], b: readonly BucketManifestFile[]): boolean {
  const key = (f: BucketManifestFile) => `${f.path}\0${f.size}\0${f.sha256}\0${f.etag}\0${f.gitOid ?? ''}`;
  const x = a.map(key).sort();
  const y = b.map(key).sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

function tryParse(text: string, where: string, log: Logger | undefined): BucketManifest | undefined {
  try {
    return parseManifest(text, where);
  } catch (e) {
    log?.warn({ err: (e as Error).message }, 'existing manifest unreadable; it will be rewritten');
    return undefined;
  }
}
