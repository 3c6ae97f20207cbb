/**
 * Streaming, validating bundle reader shared by `bundle verify` and `bundle import`. It owns every
 * rule about what a bundle may contain; callers only decide where verified bytes go.
 *
 * Memory stays bounded: the manifest (capped) is the only entry held in memory; blob content is
 * handed to the caller chunk by chunk while it is hashed.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { IntegrityError, NotFoundError, SwiftFetchError, UsageError } from '../core/errors.js';
import { BlobHasher, checkDigests } from '../core/integrity.js';
import { validateRepoPath } from '../core/paths.js';
import { ArchiveEnd } from './archive-end.js';
import { BLOB_PREFIX, blobOfEntry, gitOidsBySha, MANIFEST_NAME, MAX_MANIFEST_BYTES, parseManifest, type BundleManifest } from './format.js';
import { checkSignature, MAX_SIGNATURE_BYTES, SIGNATURE_NAME, type Signer, type TrustedKey } from './sign.js';

export interface BlobInfo {
  sha256: string;
  size: number;
  /** The git blob id this content must also have (regular HF files), checked by the reader too. */
  gitOid?: string;
}

export interface ReadHandlers {
  /**
   * Keys whose signature the bundle must carry (see sign.ts). Empty or absent: any bundle, but a
   * signature it carries must still be valid. Checked before onManifest, so before any blob.
   */
  trust?: readonly TrustedKey[];
  /** Called once, before any blob, with the validated manifest (and its signature checked). */
  onManifest?(manifest: BundleManifest): void | Promise<void>;
  /**
   * Called for each blob entry. `data` yields the entry's bytes (being hashed as they pass); the
   * handler may consume it or not (the reader drains what is left). The reader checks size and
   * digests after the handler returns and throws IntegrityError on a mismatch, so the handler
   * must treat what it wrote as unverified until readBundle resolves.
   */
  onBlob?(blob: BlobInfo, data: AsyncIterable<Buffer>): void | Promise<void>;
  signal?: AbortSignal;
}

export interface ReadSummary {
  manifest: BundleManifest;
  blobs: number;
  /** Content bytes read (hashed) from blob entries. */
  bytes: number;
  /** Who signed the manifest (undefined: not signed). */
  signer?: Signer;
}

function entryError(name: string, why: string): UsageError {
  return new UsageError(`refusing bundle entry ${JSON.stringify(name)}: ${why}`, 'ESF_BUNDLE_ENTRY');
}

/** Directory entries that a re-packing tar may add; we never create them and never need them. */
const HARMLESS_DIRS = new Set(['blobs', 'blobs/sha256']);

/** Names as tar tools may write them: a leading "./" is dropped, then the strict path rules apply. */
function entryName(raw: string, isDir: boolean): string {
  let name = raw.startsWith('./') ? raw.slice(2) : raw;
  if (isDir && name.endsWith('/')) name = name.slice(0, -1);
  validateRepoPath(name);
  return name;
}

async function readAll(entry: AsyncIterable<Buffer>, limit: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of entry) {
    n += chunk.length;
    if (n > limit) throw new UsageError(`${what} is larger than ${limit} bytes`, 'ESF_BAD_BUNDLE');
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

/**
 * tar-stream's own errors. A cut-off archive is an integrity problem, but only once it has shown
 * itself to be one: input that ends before its first complete entry header (a 6-byte file, an empty
 * one) was never a tar, and that is bad input, like any other file that is not a tar.
 */
function tarError(e: unknown, sawEntry: boolean): SwiftFetchError {
  const msg = (e as Error)?.message ?? String(e);
  if (/unexpected end/i.test(msg) && sawEntry) return new IntegrityError(`bundle is truncated: ${msg}`, { expected: 'complete archive', found: 'end of data' });
  if (/unexpected end/i.test(msg)) return new UsageError('not a tar bundle: the file ends before its first tar header', 'ESF_BAD_BUNDLE');
  return new UsageError(`not a valid tar bundle: ${msg}`, 'ESF_BAD_BUNDLE');
}

/**
 * Copy the archive from `input` into the tar parser, with backpressure, and stop reading at its
 * end-of-archive marker: a bundle padded with gigabytes of zeros (or anything else) after it is
 * read only up to there. Resolves when the parser has had everything it needs.
 */
async function feedArchive(input: Readable, extract: tar.Extract, signal: AbortSignal | undefined): Promise<void> {
  const end = new ArchiveEnd();
  const stop = () => input.destroy(signal?.reason as Error);
  signal?.addEventListener('abort', stop, { once: true });
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      signal?.throwIfAborted();
      // The reader stopped (it refused an entry): nothing more to feed.
      if (extract.destroyed) return;
      const keep = end.push(chunk);
      if (keep > 0 && !extract.write(keep === chunk.length ? chunk : chunk.subarray(0, keep))) await drained(extract);
      // Leaving the loop destroys the input: the rest of the file is never read.
      if (end.ended) break;
    }
    signal?.throwIfAborted();
    if (!extract.destroyed) extract.end(undefined); // streamx: end() with no data
  } catch (e) {
    extract.destroy(e as Error);
    throw e;
  } finally {
    signal?.removeEventListener('abort', stop);
  }
}

/** The parser wants more (or is gone: then the reading loop reports why). */
function drained(w: tar.Extract): Promise<void> {
  if (w.destroyed) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = () => {
      w.off('drain', done);
      w.off('close', done);
      w.off('error', fail);
      resolve();
    };
    const fail = (e: Error) => {
      w.off('drain', done);
      w.off('close', done);
      reject(e);
    };
    w.on('drain', done);
    w.on('close', done);
    w.once('error', fail);
  });
}

/**
 * Read a bundle from a stream, validating every entry and hashing every blob. Resolves only when
 * the whole archive was read, every blob the manifest lists was present exactly once with the
 * right size and digest, and nothing else was in it (up to its end-of-archive marker; what follows
 * that is not read).
 */
export async function readBundle(input: Readable, handlers: ReadHandlers = {}): Promise<ReadSummary> {
  const extract = tar.extract();
  let feedError: unknown;
  const feeding = feedArchive(input, extract, handlers.signal).catch((e: unknown) => {
    feedError = e;
  });
  let manifest: BundleManifest | undefined;
  let manifestBytes: Buffer | undefined;
  let signer: Signer | undefined;
  // The manifest is admitted (signature checked, onManifest called) at the entry after it: the
  // signature, when there is one, comes right after the manifest.
  let admitted = false;
  const admit = async (signature: Buffer | undefined) => {
    admitted = true;
    signer = checkSignature(signature, manifestBytes!, handlers.trust ?? []);
    await handlers.onManifest?.(manifest!);
  };
  let expected = new Map<string, number>();
  let gitOids = new Map<string, string>();
  const seen = new Set<string>();
  let bytes = 0;
  let first = true;
  try {
    try {
      for await (const entry of extract) {
        handlers.signal?.throwIfAborted();
        const h = entry.header;
        // tar-stream consumes pax and GNU long-name headers itself; what reaches us is a real entry.
        const type: string = h.type ?? 'file';
        const body = entry as unknown as AsyncIterable<Buffer>;
        if (type === 'directory') {
          const name = entryName(h.name, true);
          if (!HARMLESS_DIRS.has(name)) throw entryError(h.name, 'unexpected directory');
          await readAll(body, 0, 'a directory entry');
          continue;
        }
        if (type !== 'file' && type !== 'contiguous-file') {
          const what = type === 'symlink' || type === 'link' ? `a ${type} (to ${JSON.stringify(h.linkname ?? '')})` : `a ${type}`;
          throw entryError(h.name, `${what}; bundles hold regular files only`);
        }
        const name = entryName(h.name, false);
        if (first) {
          first = false;
          if (name !== MANIFEST_NAME) throw entryError(h.name, `the first entry must be ${MANIFEST_NAME}`);
          manifestBytes = await readAll(body, MAX_MANIFEST_BYTES, 'the manifest');
          manifest = parseManifest(manifestBytes.toString('utf8'));
          expected = new Map(manifest.blobs.map((b) => [b.sha256, b.size]));
          gitOids = gitOidsBySha(manifest);
          continue;
        }
        if (name === SIGNATURE_NAME) {
          if (admitted) throw entryError(h.name, 'a signature must come right after the manifest, once');
          await admit(await readAll(body, MAX_SIGNATURE_BYTES, 'the signature'));
          continue;
        }
        if (!admitted) await admit(undefined);
        const sha = blobOfEntry(name);
        if (name === MANIFEST_NAME) throw entryError(h.name, 'a second manifest');
        if (!sha) throw entryError(h.name, `unknown entry (expected ${BLOB_PREFIX}<sha256>)`);
        const size = expected.get(sha);
        if (size === undefined) throw entryError(h.name, 'content the manifest does not list');
        if (seen.has(sha)) throw entryError(h.name, 'content present twice');
        seen.add(sha);
        if (h.size !== size) {
          throw new IntegrityError(`bundle entry ${name}: ${h.size} bytes, but the manifest says ${size}`, {
            expected: `${size} bytes`, found: `${h.size} bytes`, path: name,
          });
        }
        const gitOid = gitOids.get(sha);
        const hasher = new BlobHasher(size, gitOid !== undefined);
        // Every byte passes the hasher, whether or not the handler reads it.
        const hashed = (async function* () {
          for await (const chunk of body) {
            hasher.update(chunk);
            yield chunk;
          }
        })();
        const info: BlobInfo = { sha256: sha, size };
        if (gitOid) info.gitOid = gitOid;
        await handlers.onBlob?.(info, hashed);
        for await (const _ of hashed) {
          /* drain what the handler left */
        }
        bytes += hasher.length;
        const got = hasher.digest();
        if (hasher.length !== size) {
          throw new IntegrityError(`bundle entry ${name} ended after ${hasher.length} of ${size} bytes`, { expected: `${size} bytes`, found: `${hasher.length} bytes`, path: name });
        }
        const badSha = checkDigests({ sha256: sha }, got);
        if (badSha) throw new IntegrityError(`bundle entry ${name} does not match its SHA-256 (tampered or corrupt)`, { ...badSha, path: name });
        // Both must hold: the git id is what a hub's listing of this content promises.
        const badGit = gitOid ? checkDigests({ gitOid }, got) : undefined;
        if (badGit) throw new IntegrityError(`bundle entry ${name} does not match its git blob id`, { ...badGit, path: name });
      }
    } catch (e) {
      if (e instanceof SwiftFetchError) throw e;
      if (handlers.signal?.aborted) throw handlers.signal.reason;
      throw tarError(e, !first);
    }
    await feeding;
    if (feedError) {
      if (feedError instanceof SwiftFetchError) throw feedError;
      if (handlers.signal?.aborted) throw handlers.signal.reason;
      throw tarError(feedError, !first);
    }
    if (!manifest) throw new UsageError(`not a swift-fetch bundle: the archive is empty (no ${MANIFEST_NAME})`, 'ESF_BAD_BUNDLE');
    if (!admitted) await admit(undefined);
    const missing = [...expected.keys()].filter((s) => !seen.has(s));
    if (missing.length > 0) {
      throw new IntegrityError(`bundle is missing ${missing.length} of ${expected.size} blobs (truncated?), e.g. ${BLOB_PREFIX}${missing[0]}`, {
        expected: `${expected.size} blobs`, found: `${seen.size} blobs`,
      });
    }
    return { manifest, blobs: seen.size, bytes, ...(signer ? { signer } : {}) };
  } finally {
    if (!extract.destroyed) extract.destroy();
    input.destroy();
    await feeding;
  }
}

/** Open a bundle file for reading; a missing file is "not found" (3), a directory bad usage (2). */
export async function openBundle(path: string): Promise<Readable> {
  let st;
  try {
    st = await fsp.stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`bundle ${path} does not exist`, 'ESF_NO_BUNDLE');
    throw new UsageError(`cannot read bundle ${path}: ${(e as Error).message}`, 'ESF_BAD_BUNDLE');
  }
  if (!st.isFile() && !st.isFIFO()) throw new UsageError(`bundle ${path} is not a file`, 'ESF_BAD_BUNDLE');
  return createReadStream(path, { highWaterMark: 1 << 20 });
}
