import { describe, expect, it } from 'vitest';
import { ExitCode, UsageError } from '../../src/core/errors.js';
import { formatRef, parseRef, parseS3Location, repoKey } from '../../src/core/ref.js';
import { listingRevision, parseManifest } from '../../src/s3/manifest.js';
import { planPartSize } from '../../src/s3/push.js';
import { replicaPrefix } from '../../src/s3/replica.js';
import { pushTargets } from '../../src/cli/commands/push.js';

describe('s3 refs', () => {
  it('reads s3://BUCKET/PREFIX with bucket as org, prefix as name, revision latest or a listing revision', () => {
    expect(parseRef('s3://models/qwen/ckpt-100')).toEqual({ hub: 's3', org: 'models', name: 'qwen/ckpt-100', revision: 'latest' });
    expect(parseRef('s3://my.bucket/a/')).toEqual({ hub: 's3', org: 'my.bucket', name: 'a', revision: 'latest' });
    const rev = 'a'.repeat(40);
    expect(parseRef(`s3://models/x@${rev}`).revision).toBe(rev);
    // formatRef's output parses back to the same ref (records, daemon keys and bundles rely on it).
    for (const text of ['s3://models/qwen/ckpt-100', `s3://models/x@${rev}`]) expect(parseRef(formatRef(parseRef(text)))).toEqual(parseRef(text));
  });

  it.each(['s3://', 's3://ab/x', 's3://UPPER/x', 's3://-bkt/x', 's3://b..b/x', 's3://models', 's3://models/', 's3://models/a//b', 's3://models/a/../b', 's3://models/./b', 's3://models/x@main', 's3://models/a b', 's3://models/a+b', `s3://models/${'x'.repeat(201)}`])(
    'rejects %j with a usage error (exit 2)',
    (bad) => {
      let err: unknown;
      try {
        parseRef(bad);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UsageError);
      expect((err as UsageError).exitCode).toBe(ExitCode.usage);
    },
  );

  it('keys prefixes as one path component, distinct for distinct prefixes', () => {
    const a = repoKey(parseRef('s3://models/a/b'));
    const b = repoKey(parseRef('s3://models/a-b'));
    const c = repoKey(parseRef('s3://models/a_b'));
    expect(new Set([a, b, c]).size).toBe(3);
    for (const k of [a, b, c]) expect(k).not.toContain('/');
    expect(repoKey(parseRef('hf://org/name'))).toBe('hf--org--name');
  });

  it('places replicas at PREFIX/<hub>/<ORG>/<NAME>/<commit>', () => {
    const c = 'b'.repeat(40);
    expect(replicaPrefix('mirror', parseRef('hf://Qwen/Qwen2.5-0.5B'), c)).toBe(`mirror/hf/Qwen/Qwen2.5-0.5B/${c}`);
    expect(parseS3Location('s3://team/mirror/')).toEqual({ bucket: 'team', prefix: 'mirror' });
  });

  it('push takes exactly one kind of destination; replicas only for hub models', () => {
    expect(pushTargets('s3://b1x/p', [], 'hf')).toEqual([{ to: { bucket: 'b1x', prefix: 'p' } }]);
    expect(pushTargets(undefined, ['s3://b1x/r', 's3://b1x/r/', 's3://b2x/r'], 'ms')).toEqual([{ replica: { bucket: 'b1x', prefix: 'r' } }, { replica: { bucket: 'b2x', prefix: 'r' } }]);
    expect(() => pushTargets(undefined, [], 'hf')).toThrow(UsageError);
    expect(() => pushTargets('s3://b1x/p', ['s3://b1x/r'], 'hf')).toThrow(UsageError);
    expect(() => pushTargets(undefined, ['s3://b1x/r'], 's3')).toThrow(UsageError);
  });
});

describe('listing revisions and manifests', () => {
  const objs = [
    { path: 'a', size: 1, etag: 'e1' },
    { path: 'b/c', size: 2, etag: 'e2' },
  ];
  it('derive the revision from keys, sizes and ETags, in any listing order', () => {
    const r = listingRevision(objs);
    expect(r).toMatch(/^[0-9a-f]{40}$/);
    expect(listingRevision([...objs].reverse())).toBe(r);
    expect(listingRevision([objs[0]!, { ...objs[1]!, etag: 'e3' }])).not.toBe(r);
    expect(listingRevision([objs[0]!, { ...objs[1]!, size: 3 }])).not.toBe(r);
    expect(listingRevision([objs[0]!])).not.toBe(r);
  });

  it('refuse a manifest with hostile paths or malformed hashes', () => {
    const good = { format: 'swift-fetch/s3-manifest', version: 1, source: 'hf://a/b@c', commit: 'c', createdAt: '', files: [{ path: 'x', size: 1, sha256: 'a'.repeat(64), etag: 'e' }] };
    expect(parseManifest(JSON.stringify(good), 'm').files).toHaveLength(1);
    for (const bad of [
      { ...good, files: [{ ...good.files[0], path: '../escape' }] },
      { ...good, files: [{ ...good.files[0], sha256: 'nothex' }] },
      { ...good, files: [{ ...good.files[0], size: -1 }] },
      { ...good, format: 'other' },
    ]) {
      expect(() => parseManifest(JSON.stringify(bad), 'm')).toThrow();
    }
    expect(() => parseManifest('{', 'm')).toThrow(UsageError);
  });

  it('plans parts within S3 limits', () => {
    const MiB = 1024 * 1024;
    expect(planPartSize(100 * MiB, 64 * MiB)).toBe(64 * MiB);
    expect(planPartSize(100 * MiB, 1 * MiB)).toBe(5 * MiB);
    // 1 TiB in 64 MiB parts would be 16,384 parts: the part grows to stay within 10,000.
    const big = 1024 * 1024 * MiB;
    expect(Math.ceil(big / planPartSize(big, 64 * MiB))).toBeLessThanOrEqual(10_000);
  });
});
