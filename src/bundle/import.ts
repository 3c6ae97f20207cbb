/**
 * Import a bundle into a store with no network at all. Every blob is hashed while it is written
 * into a private staging folder under the store's partial dir; only when the whole archive has
 * been read and every hash matched are blobs committed and the revisions published (views, records
 * and local refs, so `path REF@rev` and init's fast path work offline). Any failure removes the
 * staging folder: nothing is published and nothing is written anywhere else.
 */
import { createWriteStream, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { IntegrityError } from '../core/errors.js';
import { checkDigests } from '../core/integrity.js';
import { totalBytes } from '../core/manifest.js';
import { isCommitId, type Hub } from '../core/ref.js';
import { storageError, uniqueSuffix } from '../store/fsutil.js';
import { Store, type FileProvenance } from '../store/store.js';
import { modelLabel, type BundleManifest } from './format.js';
import { openBundle, readBundle, type BlobInfo } from './read.js';
import type { Signer, TrustedKey } from './sign.js';

export interface ImportOptions {
  store: string;
  logger?: Logger;
  signal?: AbortSignal;
  /** Accept only bundles signed by one of these keys (`--trust`, the daemon's `imports.trust`). */
  trust?: readonly TrustedKey[];
  /** How the bundle is named in provenance (default: the file path given, or "-" for a stream). */
  label?: string;
  onBlob?: (done: { blobs: number; bytes: number; totalBlobs: number; totalBytes: number }) => void;
}

export interface ImportedModel {
  /** `hub://ORG/NAME@revision` as the bundle named it. */
  ref: string;
  hub: Hub;
  org: string;
  name: string;
  commit: string;
  revisions: string[];
  /** The plain view directory. */
  path: string;
  files: number;
  bytes: number;
}

export interface ImportResult {
  models: ImportedModel[];
  /** Blobs that were new to the store. */
  blobsWritten: number;
  /** Blobs the store already had (still read and verified, not written). */
  blobsPresent: number;
  bytesRead: number;
  /** Who signed it (undefined: unsigned). */
  signer?: Signer;
}

export async function importBundle(source: string | Readable, opts: ImportOptions): Promise<ImportResult> {
  const input = typeof source === 'string' ? await openBundle(source) : source;
  const log = opts.logger?.child({ module: 'bundle-import' });
  const store = new Store(opts.store);
  await store.init();
  const staging = join(store.partialDir, `import-${uniqueSuffix()}`);
  try {
    await fsp.mkdir(staging, { recursive: true });
  } catch (e) {
    input.destroy();
    throw storageError(e, staging);
  }
  const staged: BlobInfo[] = [];
  let present = 0;
  let done = 0;
  let doneBytes = 0;
  let totalBlobs = 0;
  let totalBytes = 0;
  try {
    const summary = await readBundle(input, {
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.trust ? { trust: opts.trust } : {}),
      onManifest: async (m) => {
        await checkAgainstStore(store, m);
        totalBlobs = m.blobs.length;
        totalBytes = m.blobs.reduce((n, b) => n + b.size, 0);
        log?.info({ models: m.models.map(modelLabel), blobs: totalBlobs, bytes: totalBytes }, 'importing bundle');
      },
      onBlob: async (blob, data) => {
        // Content we already hold is only verified (the reader drains and hashes it), not rewritten.
        if (await store.hasBlob(blob.sha256)) {
          present++;
        } else {
          const dest = join(staging, blob.sha256);
          try {
            await pipeline(Readable.from(data), createWriteStream(dest, { flags: 'wx', highWaterMark: 1 << 20 }));
          } catch (e) {
            throw storageError(e, dest);
          }
          staged.push(blob);
        }
        done++;
        doneBytes += blob.size;
        opts.onBlob?.({ blobs: done, bytes: doneBytes, totalBlobs, totalBytes });
      },
    });
    // Every byte checked: now, and only now, the content becomes part of the store.
    for (const b of staged) await store.commitBlob(join(staging, b.sha256), b.sha256, b.gitOid);
    const bundle = { file: opts.label ?? (typeof source === 'string' ? source : '-'), ...(summary.signer ? { signedBy: summary.signer.keyId } : {}) };
    const models = await publishAll(store, summary.manifest, bundle);
    log?.info({ models: models.map((m) => m.ref), blobsWritten: staged.length, blobsPresent: present, signedBy: summary.signer?.keyId }, 'bundle imported');
    return { models, blobsWritten: staged.length, blobsPresent: present, bytesRead: summary.bytes, ...(summary.signer ? { signer: summary.signer } : {}) };
  } finally {
    await fsp.rm(staging, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * A revision is immutable: if the store already holds this commit, every path both know must
 * have the same content. A bundle that disagrees is corrupt or forged; refuse it before reading on.
 */
async function checkAgainstStore(store: Store, manifest: BundleManifest): Promise<void> {
  for (const m of manifest.models) {
    const rec = await store.readRecord({ hub: m.hub, org: m.org, name: m.name }, m.commit);
    if (!rec) continue;
    const have = new Map(rec.files.map((f) => [f.path, f.sha256]));
    for (const f of m.files) {
      const sha = have.get(f.path);
      const bad = sha === undefined ? undefined : checkDigests({ sha256: sha }, f);
      if (bad) {
        throw new IntegrityError(`${modelLabel(m)} (${m.commit}): ${f.path} in the bundle differs from the same commit already in the store`, { ...bad, path: f.path });
      }
    }
  }
}

async function publishAll(store: Store, manifest: BundleManifest, bundle: NonNullable<FileProvenance['bundle']>): Promise<ImportedModel[]> {
  const out: ImportedModel[] = [];
  const at = new Date().toISOString();
  for (const m of manifest.models) {
    const key = { hub: m.hub, org: m.org, name: m.name };
    const from: FileProvenance = { via: 'bundle', hub: m.hub, commit: m.commit, at, bundle };
    const files = m.files.map((f) => ({ ...f, from }));
    // One publish per revision name: each writes its own local ref (and HF/ModelScope ref) atomically.
    const names = [...new Set([...(isCommitId(m.revision) ? [] : [m.revision]), ...m.revisions])];
    let path = '';
    for (const revision of names.length > 0 ? names : [m.commit]) {
      const rec = await store.publish({ key, commit: m.commit, revision, files, complete: m.complete });
      path = rec.paths.plain;
    }
    out.push({
      ref: modelLabel(m),
      hub: m.hub,
      org: m.org,
      name: m.name,
      commit: m.commit,
      revisions: names,
      path,
      files: m.files.length,
      bytes: totalBytes(m.files),
    });
  }
  return out;
}
