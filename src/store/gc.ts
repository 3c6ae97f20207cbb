/**
 * Garbage collection under a byte quota: evict least-recently-used revisions that nobody declared
 * and nobody is using, then free the blobs no view links any more.
 *
 * Planning is pure (records in, records to evict out) so its rules can be tested exhaustively;
 * the executor only calls the Store. A blob shared by several revisions counts as freed only when
 * the last revision referencing it is evicted: that is also what the store's link counts do.
 */
import { hostname } from 'node:os';
import { repoKey, type Hub } from '../core/ref.js';
import { listLeases, tryAcquireLease } from './lease.js';
import type { PublishRecord, RepoKeyParts, Store } from './store.js';

/** The fields planning needs; a PublishRecord has them all. */
export interface GcRecord {
  hub: Hub;
  org: string;
  name: string;
  commit: string;
  files: ReadonlyArray<{ sha256: string; size: number }>;
  lastUsedAt: string;
}

export interface GcPlanOptions {
  /** Quota for the blob store; 0 or less means no quota (evict nothing). */
  maxBytes: number;
  /** Revision keys (`revisionKey`) or whole-repo keys (`repoKey`) that must stay. */
  pinned: ReadonlySet<string>;
  /** Same key forms; revisions being downloaded or read right now. */
  inUse: ReadonlySet<string>;
  /** Bytes the blob store holds now (Store.usage().usedBytes). */
  usedBytes: number;
}

export interface GcPlan<T extends GcRecord = GcRecord> {
  evict: T[];
  /** Bytes referenced by records (what stays after a sweep of orphans). */
  referencedBytes: number;
  /** Estimated bytes the blob store will hold after evicting and sweeping. */
  projectedBytes: number;
  /** True when the quota cannot be met without touching pinned or in-use revisions. */
  overQuota: boolean;
}

/** `hub--ORG--NAME@commit`: the same name pull uses for its lease. */
export function revisionKey(r: { hub: string; org: string; name: string; commit: string }): string {
  return `${repoKey(r as RepoKeyParts)}@${r.commit}`;
}

function protectedBy(set: ReadonlySet<string>, r: GcRecord): boolean {
  return set.has(revisionKey(r)) || set.has(repoKey(r));
}

/**
 * Which revisions to evict so that the blob store fits in `maxBytes`: oldest `lastUsedAt` first,
 * never a pinned or in-use one, stopping as soon as the projection fits.
 */
export function planGc<T extends GcRecord>(records: readonly T[], opts: GcPlanOptions): GcPlan<T> {
  const refs = new Map<string, { size: number; count: number }>();
  for (const r of records) {
    // A revision listing one blob twice (two paths, same content) still holds one reference.
    for (const sha of new Set(r.files.map((f) => f.sha256))) {
      const e = refs.get(sha);
      if (e) e.count++;
      else refs.set(sha, { size: r.files.find((f) => f.sha256 === sha)!.size, count: 1 });
    }
  }
  let referenced = 0;
  for (const e of refs.values()) referenced += e.size;
  // Orphans go with the sweep whatever we evict; blobs referenced but missing do not count.
  let projected = Math.min(opts.usedBytes, referenced);
  const evict: T[] = [];
  const quota = opts.maxBytes > 0 ? opts.maxBytes : Infinity;
  if (projected > quota) {
    const candidates = records
      .filter((r) => !protectedBy(opts.pinned, r) && !protectedBy(opts.inUse, r))
      .sort((a, b) => time(a.lastUsedAt) - time(b.lastUsedAt) || revisionKey(a).localeCompare(revisionKey(b)));
    for (const r of candidates) {
      if (projected <= quota) break;
      evict.push(r);
      for (const sha of new Set(r.files.map((f) => f.sha256))) {
        const e = refs.get(sha)!;
        if (--e.count === 0) projected -= e.size;
      }
    }
  }
  return { evict, referencedBytes: referenced, projectedBytes: Math.max(0, projected), overQuota: projected > quota };
}

function time(iso: string): number {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? 0 : t;
}

// ---------------------------------------------------------------------------------------------

export type GcStore = Pick<Store, 'root' | 'leaseDir' | 'listRecords' | 'removeRevision' | 'sweepBlobs' | 'sweepWorkDirs' | 'usage'>;

export interface GcOptions {
  maxBytes: number;
  pinned?: ReadonlySet<string>;
  inUse?: ReadonlySet<string>;
  dryRun?: boolean;
  /** Blobs younger than this are not swept (a publish may be about to link them). Store default when absent. */
  sweepGraceMs?: number;
  holder?: string;
}

export interface GcResult {
  /** False when another process was collecting this store (nothing was done). */
  ran: boolean;
  dryRun: boolean;
  evicted: Array<{ ref: string; commit: string; bytes: number; lastUsedAt: string }>;
  usedBytesBefore: number;
  /** Estimated after eviction and sweep (exact for a real run: measured again). */
  usedBytesAfter: number;
  freedBytes: number;
  freedBlobs: number;
  /** Pin and staging folders of pulls and publishes whose process is gone (removed, or found in a dry run). */
  orphans: string[];
  overQuota: boolean;
}

/**
 * Collect one store. Revisions with a live pull lease count as in use whoever holds it. Only one
 * collector runs per store at a time (a lease named `gc`), across nodes sharing the volume.
 */
export async function runGc(store: GcStore, opts: GcOptions): Promise<GcResult> {
  const dryRun = opts.dryRun ?? false;
  const lease = dryRun ? undefined : await tryAcquireLease(store.leaseDir, 'gc', { holder: opts.holder ?? `gc:${hostname()}:${process.pid}` });
  const empty = { dryRun, evicted: [], freedBytes: 0, freedBlobs: 0, orphans: [], overQuota: false };
  if (!dryRun && !lease) {
    const { usedBytes } = await store.usage();
    return { ran: false, usedBytesBefore: usedBytes, usedBytesAfter: usedBytes, ...empty };
  }
  try {
    // First what dead pulls and publishes left: their pins keep blobs linked, so the sweep below
    // can free what only they held.
    const orphans = await store.sweepWorkDirs(dryRun);
    const inUse = new Set(opts.inUse ?? []);
    for (const l of await listLeases(store.leaseDir)) if (!l.expired && l.name !== 'gc') inUse.add(l.name);
    const records = await store.listRecords();
    const { usedBytes } = await store.usage();
    const plan = planGc(records, { maxBytes: opts.maxBytes, pinned: opts.pinned ?? new Set(), inUse, usedBytes });
    const evicted = plan.evict.map((r: PublishRecord) => ({ ref: `${r.hub}://${r.org}/${r.name}`, commit: r.commit, bytes: r.bytes, lastUsedAt: r.lastUsedAt }));
    if (dryRun) {
      return { ran: true, dryRun, evicted, usedBytesBefore: usedBytes, usedBytesAfter: plan.projectedBytes, freedBytes: Math.max(0, usedBytes - plan.projectedBytes), freedBlobs: 0, orphans, overQuota: plan.overQuota };
    }
    for (const r of plan.evict) await store.removeRevision(r, r.commit);
    // The evicted revisions' blobs go now; other unreferenced blobs only once past the grace period.
    const immediate = plan.evict.flatMap((r: PublishRecord) => r.files.map((f) => f.sha256));
    const sweep = await store.sweepBlobs({ immediate, ...(opts.sweepGraceMs === undefined ? {} : { graceMs: opts.sweepGraceMs }) });
    const after = await store.usage();
    return { ran: true, dryRun, evicted, usedBytesBefore: usedBytes, usedBytesAfter: after.usedBytes, ...sweep, orphans, overQuota: after.usedBytes > (opts.maxBytes > 0 ? opts.maxBytes : Infinity) };
  } finally {
    await lease?.release();
  }
}
