/**
 * Write a bundle: the manifest first, then each distinct blob once, streamed straight from the
 * store's content-addressed files into the tar (nothing is staged in memory or on disk). Each blob
 * is hashed on its way out, so a store that rotted on disk cannot produce a bundle that only
 * fails on the far side of the air gap.
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { readFileSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import tar from 'tar-stream';
import { IntegrityError, NotFoundError, StorageError } from '../core/errors.js';
import { BlobHasher } from '../core/integrity.js';
import { formatRef, type ModelRef } from '../core/ref.js';
import { pullModel, type PullEvent } from '../pull/index.js';
import { storageError, uniqueSuffix } from '../store/fsutil.js';
import { Store, type PublishRecord } from '../store/store.js';
import { BUNDLE_FORMAT, BUNDLE_VERSION, blobEntryName, MANIFEST_NAME, missingDigest, parseManifest, type BundleManifest, type BundleModel } from './format.js';
import { SIGNATURE_NAME, signManifest, type SigningKey } from './sign.js';

export interface CreateOptions {
  store: string;
  stateDir: string;
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  signal?: AbortSignal;
  /** Progress of the pulls made for refs the store lacks. */
  onPull?: (ref: string, e: PullEvent) => void;
  /** Sign the manifest with this Ed25519 key (`--sign`): a signature entry follows the manifest. */
  sign?: SigningKey;
  /** Called after each blob is written. */
  onBlob?: (done: { blobs: number; bytes: number; totalBlobs: number; totalBytes: number }) => void;
}

export interface CreateSummary {
  manifest: BundleManifest;
  blobs: number;
  /** Content bytes (the tar adds headers and padding). */
  bytes: number;
  /** Refs that had to be pulled first. */
  pulled: string[];
}

function toolVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

/**
 * The record a bundle carries for `ref`: what the store has (no network) when it holds the whole
 * revision, else whatever a pull brings (which takes part in the store's lease protocol).
 */
async function recordFor(ref: ModelRef, store: Store, opts: CreateOptions, pulled: string[]): Promise<PublishRecord> {
  const label = formatRef(ref);
  try {
    const rec = await store.findRecord(ref, ref.revision);
    if (rec.complete) return rec;
  } catch (e) {
    if (!(e instanceof NotFoundError)) throw e;
  }
  opts.logger?.child({ module: 'bundle' }).info({ ref: label }, 'not (completely) in the store: pulling it first');
  const res = await pullModel(ref, {
    store: opts.store,
    stateDir: opts.stateDir,
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
    onEvent: (e) => opts.onPull?.(label, e),
  });
  pulled.push(label);
  return res.record;
}

/** Build (and self-check) the manifest for a set of records. */
export function buildManifest(entries: Array<{ ref: ModelRef; record: PublishRecord }>, created = new Date()): BundleManifest {
  const models: BundleModel[] = [];
  const blobs = new Map<string, number>();
  const seen = new Set<string>();
  for (const { ref, record } of entries) {
    const id = `${record.hub}://${record.org}/${record.name}@${record.commit}`;
    if (seen.has(id)) continue; // the same revision asked for twice (e.g. by branch and by commit)
    seen.add(id);
    // Every file goes out with the digest its hub vouches for; a record without one (written from
    // an older, forgeable bundle) is not passed on: the importing side could not check it.
    for (const f of record.files) {
      const why = missingDigest(record.hub, f);
      if (why) {
        throw new IntegrityError(`${id}: the store's record of ${JSON.stringify(f.path)} has ${why}; pull ${formatRef(ref)} again before bundling it`, {
          expected: 'a digest for every file', found: 'none', path: f.path,
        });
      }
    }
    models.push({
      hub: record.hub,
      org: record.org,
      name: record.name,
      revision: ref.revision,
      revisions: [...new Set([...record.revisions, ...(ref.revision === record.commit ? [] : [ref.revision])])].filter((r) => r !== record.commit),
      commit: record.commit,
      complete: record.complete,
      files: record.files.map((f) => ({
        path: f.path,
        size: f.size,
        sha256: f.sha256,
        ...(f.gitOid ? { gitOid: f.gitOid } : {}),
        lfs: f.lfs,
        verified: f.verified,
      })),
    });
    for (const f of record.files) blobs.set(f.sha256, f.size);
  }
  const manifest: BundleManifest = {
    format: BUNDLE_FORMAT,
    version: BUNDLE_VERSION,
    created: created.toISOString(),
    tool: { name: 'swift-fetch', version: toolVersion() },
    models,
    blobs: [...blobs].map(([sha256, size]) => ({ sha256, size })),
  };
  // What we write must pass our own reader's rules.
  parseManifest(JSON.stringify(manifest));
  return manifest;
}

async function writeEntry(pack: tar.Pack, header: Partial<tar.Header> & { name: string }, write: (sink: Writable) => Promise<void>): Promise<void> {
  let sink!: Writable;
  const done = new Promise<void>((resolve, reject) => {
    sink = pack.entry(header, (err) => (err ? reject(err) : resolve())) as unknown as Writable;
  });
  done.catch(() => undefined); // observed below, or superseded by the error `write` throws
  await write(sink);
  sink.end();
  await done;
}

/** Any failure to write the output is a storage problem (exit 6), with the path named. */
function outputError(e: unknown, path: string): Error {
  const err = storageError(e, path);
  return err instanceof StorageError ? err : new StorageError(`cannot write ${path}: ${(e as Error)?.message ?? String(e)}`, 'ESF_STORAGE', { cause: e });
}

async function copyBlob(store: Store, sha256: string, size: number, sink: Writable, signal?: AbortSignal): Promise<void> {
  const path = store.blobPath(sha256);
  const hasher = new BlobHasher(size, false);
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20, ...(signal ? { signal } : {}) }) as AsyncIterable<Buffer>) {
      // The tar header already promised `size` bytes: never write more than that.
      if (hasher.length + chunk.length > size) break;
      hasher.update(chunk);
      if (!sink.write(chunk)) await once(sink, 'drain', signal ? { signal } : {});
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new IntegrityError(`the store lost blob ${sha256} (${path}); run \`swift-fetch verify\``, { expected: `sha256:${sha256}`, found: 'no file', path });
    }
    throw storageError(e, path);
  }
  const got = hasher.digest();
  if (hasher.length !== size || got.sha256 !== sha256) {
    throw new IntegrityError(`the store's blob ${path} is corrupt (run \`swift-fetch verify\`); refusing to bundle it`, {
      expected: `sha256:${sha256} (${size} bytes)`, found: `sha256:${got.sha256} (${hasher.length}+ bytes)`, path,
    });
  }
}

/** Write a bundle of `refs` to `out` (a stream). Pulls first what the store lacks. */
export async function createBundle(refs: ModelRef[], out: Writable, opts: CreateOptions): Promise<CreateSummary> {
  const store = new Store(opts.store);
  const pulled: string[] = [];
  const entries: Array<{ ref: ModelRef; record: PublishRecord }> = [];
  for (const ref of refs) entries.push({ ref, record: await recordFor(ref, store, opts, pulled) });
  const created = new Date();
  const manifest = buildManifest(entries, created);
  const totalBytes = manifest.blobs.reduce((n, b) => n + b.size, 0);

  const pack = tar.pack();
  const writing = pipeline(pack as unknown as NodeJS.ReadableStream, out, opts.signal ? { signal: opts.signal } : {});
  let failure: unknown;
  writing.catch((e: unknown) => {
    failure ??= e;
    pack.destroy(e as Error);
  });
  let bytes = 0;
  let count = 0;
  try {
    const text = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
    await writeEntry(pack, { name: MANIFEST_NAME, size: text.length, mode: 0o644, mtime: created, type: 'file' }, async (sink) => {
      sink.write(text);
    });
    if (opts.sign) {
      const sig = signManifest(text, opts.sign);
      await writeEntry(pack, { name: SIGNATURE_NAME, size: sig.length, mode: 0o644, mtime: created, type: 'file' }, async (sink) => {
        sink.write(sig);
      });
    }
    for (const b of manifest.blobs) {
      opts.signal?.throwIfAborted();
      await writeEntry(pack, { name: blobEntryName(b.sha256), size: b.size, mode: 0o444, mtime: created, type: 'file' }, (sink) =>
        copyBlob(store, b.sha256, b.size, sink, opts.signal),
      );
      bytes += b.size;
      count++;
      opts.onBlob?.({ blobs: count, bytes, totalBlobs: manifest.blobs.length, totalBytes });
    }
    pack.finalize();
    await writing;
  } catch (e) {
    pack.destroy(e as Error);
    await writing.catch(() => undefined);
    if (failure !== undefined && !(e instanceof IntegrityError) && !opts.signal?.aborted) throw outputError(failure, 'the bundle output');
    throw e;
  }
  return { manifest, blobs: count, bytes, pulled };
}

/**
 * Create a bundle file atomically: written next to its final name and renamed into place only
 * when complete, so a failed or interrupted create never leaves a plausible-looking bundle.
 */
export async function createBundleFile(refs: ModelRef[], file: string, opts: CreateOptions): Promise<CreateSummary> {
  const tmp = `${file}.tmp-${uniqueSuffix()}`;
  let out;
  try {
    out = createWriteStream(tmp, { flags: 'wx', highWaterMark: 1 << 20 });
    await once(out, 'open');
  } catch (e) {
    throw outputError(e, file);
  }
  try {
    const summary = await createBundle(refs, out, opts);
    await fsp.rename(tmp, file).catch((e: unknown) => {
      throw outputError(e, file);
    });
    return summary;
  } catch (e) {
    out.destroy();
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}
