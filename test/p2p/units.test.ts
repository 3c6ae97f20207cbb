import { mkdtemp, rm, writeFile, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ownerOf } from '../../src/p2p/rendezvous.js';
import { addRange, covers, normalize, parseByteRange, subtractRange } from '../../src/p2p/ranges.js';
import { PeerToken } from '../../src/p2p/token.js';

describe('rendezvous ownership', () => {
  const sha = 'a'.repeat(64);
  const members = ['n1', 'n2', 'n3', 'n4'];
  it('is the same whatever order the members are listed in, and spreads pieces evenly', () => {
    const counts = new Map<string, number>();
    for (let i = 1; i <= 4000; i++) {
      const o = ownerOf(sha, i * 1024, members)!;
      expect(ownerOf(sha, i * 1024, [...members].reverse())).toBe(o);
      counts.set(o, (counts.get(o) ?? 0) + 1);
    }
    for (const m of members) expect(counts.get(m)).toBeGreaterThan(800);
  });
  it('moves only the pieces of a member that leaves', () => {
    for (let i = 1; i <= 1000; i++) {
      const before = ownerOf(sha, i, members)!;
      const after = ownerOf(sha, i, members.filter((m) => m !== 'n2'))!;
      if (before !== 'n2') expect(after).toBe(before);
    }
    expect(ownerOf(sha, 1, [])).toBeUndefined();
  });
});

describe('ranges', () => {
  it('merges, covers, subtracts', () => {
    expect(normalize([[5, 10], [0, 5], [12, 14], [13, 20], [7, 7]])).toEqual([[0, 10], [12, 20]]);
    expect(addRange([[0, 4]], 4, 8)).toEqual([[0, 8]]);
    expect(covers([[0, 10]], 2, 10)).toBe(true);
    expect(covers([[0, 5], [5, 10]], 2, 8)).toBe(false);
    expect(covers(normalize([[0, 5], [5, 10]]), 2, 8)).toBe(true);
    expect(subtractRange([[0, 10]], 3, 5)).toEqual([[0, 3], [5, 10]]);
    expect(parseByteRange('bytes=0-9', 5)).toEqual({ start: 0, end: 5 });
    expect(parseByteRange('bytes=5-', 5)).toBe('invalid');
    expect(parseByteRange('bytes=0-1,3-4', 5)).toBe('invalid');
    expect(parseByteRange(undefined, 5)).toBeUndefined();
  });
});

describe('peer token', () => {
  it('accepts only the exact bearer token and follows the file when the Secret changes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sf-p2p-token-'));
    try {
      const file = join(dir, 'token');
      await writeFile(file, 'first-token\n');
      const t = PeerToken.fromFile(file);
      expect(t.accepts('Bearer first-token')).toBe(true);
      expect(t.accepts('bearer first-token')).toBe(true);
      expect(t.accepts('Bearer first-token2')).toBe(false);
      expect(t.accepts('first-token')).toBe(false);
      expect(t.accepts(undefined)).toBe(false);
      expect(t.accepts(['Bearer first-token'])).toBe(false);
      expect(t.authorization()).toBe('Bearer first-token');
      await writeFile(file, 'second-token');
      await utimes(file, new Date(), new Date(Date.now() + 5_000));
      // Re-read at most every two seconds.
      await new Promise((r) => setTimeout(r, 2_100));
      expect(t.accepts('Bearer second-token')).toBe(true);
      expect(t.accepts('Bearer first-token')).toBe(false);
      await expect(async () => PeerToken.fromFile(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ESF_USAGE', exitCode: 2 });
      await writeFile(join(dir, 'empty'), '  \n');
      expect(() => PeerToken.fromFile(join(dir, 'empty'))).toThrow(/empty/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
