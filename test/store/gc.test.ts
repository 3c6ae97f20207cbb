import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/core/integrity.js';
import { planGc, revisionKey, runGc, type GcRecord } from '../../src/store/gc.js';
import { tryAcquireLease } from '../../src/store/lease.js';
import { Store } from '../../src/store/store.js';
import { cliArgs, spawnNode, tempDir } from '../daemon/helpers.js';

const C = (n: number) => n.toString(16).padStart(40, '0');

function rec(name: string, commit: number, lastUsedAt: string, files: Array<[string, number]>): GcRecord {
  return { hub: 'hf', org: 'o', name, commit: C(commit), lastUsedAt, files: files.map(([sha256, size]) => ({ sha256, size })) };
}

describe('planGc', () => {
  const a = rec('a', 1, '2026-01-01T00:00:00Z', [['x1', 100]]);
  const b = rec('b', 2, '2026-01-02T00:00:00Z', [['x2', 100]]);
  const c = rec('c', 3, '2026-01-03T00:00:00Z', [['x3', 100]]);
  const none = new Set<string>();

  it('evicts least recently used first and stops once under the quota', () => {
    const plan = planGc([c, a, b], { maxBytes: 200, pinned: none, inUse: none, usedBytes: 300 });
    expect(plan.evict.map((r) => r.name)).toEqual(['a']);
    expect(plan.projectedBytes).toBe(200);
    const plan2 = planGc([c, a, b], { maxBytes: 100, pinned: none, inUse: none, usedBytes: 300 });
    expect(plan2.evict.map((r) => r.name)).toEqual(['a', 'b']);
  });

  it('never evicts a pinned revision or repo, nor one in use, even when over quota', () => {
    const pinned = new Set([revisionKey(a)]);
    const inUse = new Set(['hf--o--b']); // whole repo
    const plan = planGc([a, b, c], { maxBytes: 1, pinned, inUse, usedBytes: 300 });
    expect(plan.evict.map((r) => r.name)).toEqual(['c']);
    expect(plan.overQuota).toBe(true);
    // With everything protected nothing goes, whatever the quota.
    const all = new Set([a, b, c].map(revisionKey));
    expect(planGc([a, b, c], { maxBytes: 1, pinned: all, inUse: none, usedBytes: 300 }).evict).toEqual([]);
  });

  it('counts a blob shared by several revisions as freed only with the last of them', () => {
    const old1 = rec('m', 1, '2026-01-01T00:00:00Z', [['shared', 1000], ['u1', 10]]);
    const old2 = rec('m', 2, '2026-01-02T00:00:00Z', [['shared', 1000], ['u2', 10]]);
    const pinnedNew = rec('m', 3, '2026-01-03T00:00:00Z', [['shared', 1000], ['u3', 10]]);
    // Evicting both old revisions frees only their own small blobs: the shared one stays referenced.
    const plan = planGc([old1, old2, pinnedNew], { maxBytes: 500, pinned: new Set([revisionKey(pinnedNew)]), inUse: none, usedBytes: 1030 });
    expect(plan.evict).toHaveLength(2);
    expect(plan.projectedBytes).toBe(1010);
    expect(plan.overQuota).toBe(true);
  });

  it('without a quota, or under it, evicts nothing; orphans do not count against the quota', () => {
    expect(planGc([a, b, c], { maxBytes: 0, pinned: none, inUse: none, usedBytes: 1e12 }).evict).toEqual([]);
    // 300 referenced + 700 orphaned: the sweep alone gets under 350.
    const plan = planGc([a, b, c], { maxBytes: 350, pinned: none, inUse: none, usedBytes: 1000 });
    expect(plan.evict).toEqual([]);
    expect(plan.projectedBytes).toBe(300);
  });

  it('treats an unparseable lastUsedAt as oldest', () => {
    const bad = rec('z', 9, 'not a date', [['z', 100]]);
    expect(planGc([a, bad], { maxBytes: 100, pinned: none, inUse: none, usedBytes: 200 }).evict.map((r) => r.name)).toEqual(['z']);
  });
});

describe('runGc on a real store', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: Store;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('sf-gc-'));
    store = new Store(join(dir, 'store'));
    await store.init();
  });
  afterEach(() => cleanup());

  async function publish(name: string, commit: string, files: Record<string, string>, hub: 'hf' | 'ms' = 'hf') {
    const entries = [];
    for (const [path, content] of Object.entries(files)) {
      const sha = sha256Hex(content);
      const tmp = join(store.partialDir, `${sha}.tmp`);
      await fsp.writeFile(tmp, content);
      await store.commitBlob(tmp, sha);
      entries.push({ path, size: Buffer.byteLength(content), sha256: sha, lfs: true, verified: true });
    }
    return store.publish({ key: { hub, org: 'org', name }, commit, revision: 'main', files: entries, complete: true });
  }

  it('evicts LRU unpinned revisions, keeps pinned ones, and frees only unshared blobs', async () => {
    const big = 'B'.repeat(4000);
    const shared = 'S'.repeat(3000);
    await publish('old', C(1), { 'w.bin': big + '1', 'common.bin': shared });
    await publish('pinned', C(2), { 'w.bin': big + '2', 'common.bin': shared });
    await publish('mid', C(3), { 'w.bin': big + '3' }, 'ms');
    // Make use order explicit: old < pinned < mid.
    const times = { old: '2026-01-01T00:00:00Z', pinned: '2026-01-02T00:00:00Z', mid: '2026-01-03T00:00:00Z' };
    for (const [name, t] of Object.entries(times)) {
      const commit = name === 'old' ? C(1) : name === 'pinned' ? C(2) : C(3);
      await fsp.writeFile(join(store.internal, 'records', `${name === 'mid' ? 'ms' : 'hf'}--org--${name}`, `${commit}.used`), t);
    }
    const before = await store.usage();
    expect(before.usedBytes).toBe(3 * 4001 + 3000);
    const pinned = new Set([revisionKey({ hub: 'hf', org: 'org', name: 'pinned', commit: C(2) })]);

    const dry = await runGc(store, { maxBytes: 8000, pinned, dryRun: true });
    expect(dry.evicted.map((e) => e.ref)).toEqual(['hf://org/old', 'ms://org/mid']);
    expect((await store.listRecords()).length).toBe(3);

    const res = await runGc(store, { maxBytes: 8000, pinned, sweepGraceMs: 0 });
    expect(res.ran).toBe(true);
    expect(res.evicted.map((e) => `${e.ref}@${e.commit}`)).toEqual([`hf://org/old@${C(1)}`, `ms://org/mid@${C(3)}`]);
    const left = await store.listRecords();
    expect(left.map((r) => r.name)).toEqual(['pinned']);
    // The pinned model is intact in every view; the shared blob survived the eviction of `old`.
    const keep = left[0]!;
    expect(await fsp.readFile(join(keep.paths.plain, 'common.bin'), 'utf8')).toBe(shared);
    expect(await fsp.readFile(join(keep.paths.hf!, 'w.bin'), 'utf8')).toBe(big + '2');
    expect(res.freedBlobs).toBe(2);
    expect(res.freedBytes).toBe(2 * 4001);
    expect(res.usedBytesAfter).toBe(4001 + 3000);
    await expect(fsp.access(join(dir, 'store', 'models', 'hf', 'org', 'old', C(1)))).rejects.toThrow();
    await expect(fsp.access(join(dir, 'store', 'huggingface', 'hub', 'models--org--old', 'snapshots', C(1)))).rejects.toThrow();
  });

  it('treats revisions with a live pull lease as in use, and yields to another collector', async () => {
    await publish('a', C(1), { 'f.bin': 'a'.repeat(1000) });
    await publish('b', C(2), { 'f.bin': 'b'.repeat(1000) });
    const pull = await tryAcquireLease(store.leaseDir, revisionKey({ hub: 'hf', org: 'org', name: 'a', commit: C(1) }), { holder: 'puller' });
    const res = await runGc(store, { maxBytes: 1, sweepGraceMs: 0 });
    expect(res.evicted.map((e) => e.ref)).toEqual(['hf://org/b']);
    expect(res.overQuota).toBe(true);
    await pull!.release();

    const other = await tryAcquireLease(store.leaseDir, 'gc', { holder: 'other-node' });
    const skipped = await runGc(store, { maxBytes: 1, sweepGraceMs: 0 });
    expect(skipped.ran).toBe(false);
    expect((await store.listRecords()).map((r) => r.name)).toEqual(['a']);
    await other!.release();
  });

  it('swift-fetch gc: --dry-run changes nothing, --keep pins, --json reports; a bad size exits 2', async () => {
    await publish('keep', C(1), { 'f.bin': 'k'.repeat(2000) });
    await publish('drop', C(2), { 'f.bin': 'd'.repeat(2000) });
    await fsp.writeFile(join(store.internal, 'records', 'hf--org--keep', `${C(1)}.used`), '2020-01-01T00:00:00Z');
    const { args, ts } = cliArgs('gc');
    const run = async (...extra: string[]) => {
      const c = spawnNode([...args, 'gc', '--store', store.root, ...extra], { ts });
      const { code } = await c.exited;
      return { code, out: c.lines.join('\n'), err: c.errLines.join('\n') };
    };
    const dry = await run('--max-bytes', '2500', '--dry-run', '--keep', 'hf://org/keep', '--json');
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.out)).toMatchObject({ type: 'gc', dryRun: true, evicted: [{ ref: 'hf://org/drop', commit: C(2) }] });
    expect((await store.listRecords()).length).toBe(2);

    const human = await run('--max-bytes', '2500', '--keep', 'hf://org/keep');
    expect(human.code).toBe(0);
    expect(human.out).toContain(`evicted hf://org/drop@${C(2)}`);
    expect((await store.listRecords()).map((r) => r.name)).toEqual(['keep']);

    const bad = await run('--max-bytes', 'lots');
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('--max-bytes');
  });
});
