import { describe, expect, it } from 'vitest';
import { blobFileStem, blobKeyOf, formatBlobKey, sha256OfKey } from '../../src/core/blob-key.js';

const SHA = 'ab'.repeat(32);
const OID = 'cd'.repeat(20);
const COMMIT = 'e'.repeat(40);

describe('blob keys', () => {
  it('key a listed file by SHA-256, else git oid, else its place in the commit', () => {
    expect(blobKeyOf({ path: 'a', sha256: SHA, gitOid: OID }, COMMIT)).toEqual({ kind: 'sha256', sha256: SHA });
    expect(blobKeyOf({ path: 'a', gitOid: OID }, COMMIT)).toEqual({ kind: 'git', gitOid: OID });
    expect(blobKeyOf({ path: 'dir/a', sha256: '' }, COMMIT)).toEqual({ kind: 'path', commit: COMMIT, path: 'dir/a' });
  });

  it('write the forms existing resume databases, partial files and leases already hold', () => {
    // These strings are on disk in stores and state dirs of earlier versions: a change here
    // would silently discard every resumable download.
    expect(formatBlobKey(blobKeyOf({ path: 'a', sha256: SHA }, COMMIT))).toBe(`sha256:${SHA}`);
    expect(formatBlobKey(blobKeyOf({ path: 'a', gitOid: OID }, COMMIT))).toBe(`git:${OID}`);
    expect(formatBlobKey(blobKeyOf({ path: 'd/a', sha256: '' }, COMMIT))).toBe(`path:${COMMIT}:d/a`);
    expect(blobFileStem({ kind: 'sha256', sha256: SHA })).toBe(`sha256-${SHA}`);
    expect(blobFileStem({ kind: 'git', gitOid: OID })).toBe(`git-${OID}`);
    expect(blobFileStem({ kind: 'path', commit: COMMIT, path: 'd/a' })).toMatch(/^key-[0-9a-f]{64}$/);
  });

  it('never let a digest that is not plain hex steer a file name or reach the peers', () => {
    for (const bad of ['../../etc/passwd', 'AB'.repeat(32), '', 'x/y']) {
      expect(blobFileStem({ kind: 'sha256', sha256: bad })).toMatch(/^key-[0-9a-f]{64}$/);
      expect(blobFileStem({ kind: 'git', gitOid: bad })).toMatch(/^key-[0-9a-f]{64}$/);
      expect(sha256OfKey({ kind: 'sha256', sha256: bad })).toBeUndefined();
    }
    expect(sha256OfKey({ kind: 'sha256', sha256: SHA })).toBe(SHA);
    expect(sha256OfKey({ kind: 'git', gitOid: OID })).toBeUndefined();
  });
});
