/** Offline bundles: one tar file that carries verified model revisions across an air gap. */
import type { Readable } from 'node:stream';
import { totalBytes } from '../core/manifest.js';
import { modelLabel } from './format.js';
import { openBundle, readBundle } from './read.js';
import type { Signer, TrustedKey } from './sign.js';

export { buildManifest, createBundle, createBundleFile, type CreateOptions, type CreateSummary } from './create.js';
export { BUNDLE_FORMAT, BUNDLE_VERSION, MANIFEST_NAME, blobEntryName, parseManifest, type BundleBlob, type BundleFile, type BundleManifest, type BundleModel } from './format.js';
export { importBundle, type ImportedModel, type ImportOptions, type ImportResult } from './import.js';
export { openBundle, readBundle, type BlobInfo, type ReadHandlers, type ReadSummary } from './read.js';
export { SIGNATURE_NAME, checkSignature, keyIdOf, loadSigningKey, loadTrustedKey, shortKeyId, signManifest, type Signer, type SigningKey, type TrustedKey } from './sign.js';

export interface VerifySummary {
  models: Array<{ ref: string; commit: string; files: number; bytes: number }>;
  blobs: number;
  bytes: number;
  /** Who signed it (undefined: unsigned), and whether that key is one of `trust`. */
  signer?: Signer;
}

/**
 * Check a bundle's structure, signature and every hash without a store: resolves, or throws (exit
 * 2 / 5). With `trust`, only a bundle signed by one of those keys passes.
 */
export async function verifyBundle(source: string | Readable, opts: { signal?: AbortSignal; trust?: readonly TrustedKey[] } = {}): Promise<VerifySummary> {
  const input = typeof source === 'string' ? await openBundle(source) : source;
  const s = await readBundle(input, { ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.trust ? { trust: opts.trust } : {}) });
  return {
    models: s.manifest.models.map((m) => ({ ref: modelLabel(m), commit: m.commit, files: m.files.length, bytes: totalBytes(m.files) })),
    blobs: s.blobs,
    bytes: s.bytes,
    ...(s.signer ? { signer: s.signer } : {}),
  };
}
