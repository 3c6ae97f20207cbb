/**
 * `s3://BUCKET/PREFIX` as a model source: every object under `PREFIX/` is a file of the model.
 *
 * Integrity, in order of trust: the manifest `push` wrote (its SHA-256 for each file, checked
 * against the listing's sizes before anything moves), else the object's own whole-object SHA-256
 * checksum (x-amz-checksum-sha256, type FULL_OBJECT), else nothing: the pull computes the SHA-256,
 * records the file as unverified and says so. A manifest that disagrees with the bucket (a size,
 * a missing object, or later the bytes themselves) fails the pull with exit 5 before publishing.
 *
 * The revision is derived from the listing (keys, sizes, ETags), and every GET carries
 * `If-Match: <listed ETag>`, so bytes of an object rewritten mid-pull are refused, never mixed in.
 */
import pLimit from 'p-limit';
import { IntegrityError, NotFoundError } from '../core/errors.js';
import type { FileEntry, Manifest } from '../core/manifest.js';
import { validateListing } from '../core/paths.js';
import { isCommitId, type ModelRef } from '../core/ref.js';
import type { Origin } from '../core/transfer.js';
import type { Source } from '../sources/source.js';
import type { S3Client } from './client.js';
import { PUSH_LEASE_NAME } from './lease.js';
import { MANIFEST_NAME, base64ToHex, listingRevision, parseManifest, type BucketManifest } from './manifest.js';

/** HEAD requests in flight while looking for checksums. */
const HEAD_CONCURRENCY = 16;

export class S3Source implements Source {
  readonly hubName = 'S3';
  readonly tokenVariable = 'AWS_ACCESS_KEY_ID';
  readonly endpoint: string;
  /** `commit\0path` -> ETag of the listing the manifest was built from. */
  private readonly etags = new Map<string, string>();

  constructor(private readonly client: S3Client) {
    this.endpoint = client.settings.endpoint ?? `https://s3.${client.settings.region}.amazonaws.com`;
  }

  async resolve(ref: ModelRef, signal?: AbortSignal): Promise<Manifest> {
    const bucket = ref.org;
    const prefix = `${ref.name}/`;
    const where = `s3://${bucket}/${prefix}`;
    const listed = await this.client.list(bucket, prefix, signal);
    const manifestKey = prefix + MANIFEST_NAME;
    // Zero-byte "folder" markers that consoles create are not files, nor is a push's lease.
    const objects = listed
      .filter((o) => o.key !== manifestKey && o.key !== prefix + PUSH_LEASE_NAME && !(o.key.endsWith('/') && o.size === 0))
      .map((o) => ({ path: o.key.slice(prefix.length), size: o.size, etag: o.etag }));
    if (objects.length === 0) throw new NotFoundError(`no objects under ${where}${listed.length > 0 ? ' (only a manifest)' : ''}`, 'ESF_S3_EMPTY');
    validateListing(objects.map((o) => o.path));
    const commit = listingRevision(objects);
    if (isCommitId(ref.revision) && ref.revision !== commit) {
      throw new NotFoundError(`revision ${ref.revision} of ${where} is gone: the objects changed since (the listing is now revision ${commit})`, 'ESF_REVISION_NOT_FOUND');
    }

    let manifest: BucketManifest | undefined;
    if (listed.some((o) => o.key === manifestKey)) {
      const got = await this.client.getText(bucket, manifestKey, signal);
      if (got) manifest = parseManifest(got.text, `s3://${bucket}/${manifestKey}`);
    }
    const vouched = new Map(manifest?.files.map((f) => [f.path, f]));
    if (manifest) {
      const present = new Set(objects.map((o) => o.path));
      const missing = manifest.files.find((f) => !present.has(f.path));
      if (missing) {
        throw new IntegrityError(`${where}: the manifest lists ${missing.path}, which is not in the bucket`, { expected: `object:${missing.path}`, found: 'absent', path: missing.path });
      }
    }

    const limit = pLimit(HEAD_CONCURRENCY);
    const files = await Promise.all(
      objects.map((o) =>
        limit(async (): Promise<FileEntry> => {
          const f: FileEntry = { path: o.path, size: o.size, lfs: false };
          const m = vouched.get(o.path);
          if (m) {
            if (m.size !== o.size) {
              throw new IntegrityError(`${where}${o.path}: the manifest says ${m.size} bytes, the bucket holds ${o.size}`, { expected: `size:${m.size}`, found: `size:${o.size}`, path: o.path });
            }
            f.sha256 = m.sha256;
            if (m.gitOid) f.gitOid = m.gitOid;
          } else {
            const head = await this.client.head(bucket, prefix + o.path, signal);
            if (head?.sha256) f.sha256 = base64ToHex(head.sha256);
          }
          this.etags.set(`${commit}\0${o.path}`, o.etag);
          return f;
        }),
      ),
    );
    files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return { ref, commit, files };
  }

  origin(manifest: Manifest, file: FileEntry): Origin {
    const key = `${manifest.ref.name}/${file.path}`;
    const etag = this.etags.get(`${manifest.commit}\0${file.path}`);
    return objectOrigin(this.client, manifest.ref.org, key, etag);
  }
}

/** Where the engine GETs one object: per-request SigV4 headers, pinned to the listed ETag when known. */
export function objectOrigin(client: S3Client, bucket: string, key: string, etag: string | undefined): Origin {
  const url = client.url(bucket, key);
  return {
    url,
    hubHeaders: {},
    sign: ({ url: target }) => client.sign('GET', target, etag ? { 'if-match': `"${etag}"` } : {}),
    authHint: `check the AWS credentials (${client.settings.credentialSource})`,
  };
}
