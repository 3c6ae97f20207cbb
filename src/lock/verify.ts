/**
 * `verify --lock`: does a store hold exactly what a lock pins? For each locked model: the locked
 * commit is published, every locked file is in its record with the locked SHA-256, the bytes in
 * the plain view hash to it now, and the revision name (refs/main) points at the locked commit.
 */
import { isCommitId } from '../core/ref.js';
import type { Store } from '../store/store.js';
import { verifyRecord } from '../store/verify.js';
import { pinnedRef, type Lock } from './format.js';
import { recordDifferences } from './pin.js';

export interface LockedStoreProblem {
  path?: string;
  problem: 'not-in-store' | 'missing' | 'size' | 'hash' | 'ref';
  expected: string;
  found: string;
}

export interface LockedStoreResult {
  ref: string;
  commit: string;
  /** ok; missing: the locked commit was never published here; differs: content or refs disagree. */
  state: 'ok' | 'missing' | 'differs';
  files: number;
  problems: LockedStoreProblem[];
}

export async function verifyStoreAgainstLock(store: Store, lock: Lock): Promise<LockedStoreResult[]> {
  const out: LockedStoreResult[] = [];
  for (const pin of lock.models) {
    const ref = pinnedRef(pin);
    const base = { ref: pin.ref, commit: pin.commit, files: pin.files.length };
    const rec = await store.readRecord(ref, pin.commit);
    if (!rec) {
      out.push({ ...base, state: 'missing', problems: [{ problem: 'not-in-store', expected: `commit ${pin.commit}`, found: 'never published in this store' }] });
      continue;
    }
    const problems: LockedStoreProblem[] = recordDifferences(pin.files, rec.files).map((d) => ({
      path: d.path!, problem: d.what === 'missing' ? 'missing' : 'hash', expected: d.expected, found: d.found,
    }));
    // The record agrees: now the bytes. Re-hash the locked files the record holds with the locked hash.
    const bad = new Set(problems.map((p) => p.path));
    const locked = new Set(pin.files.map((f) => f.path));
    for (const p of await verifyRecord({ ...rec, files: rec.files.filter((f) => locked.has(f.path) && !bad.has(f.path)) })) problems.push(p);
    if (!isCommitId(ref.revision)) {
      const named = await store.localCommit(ref, ref.revision);
      if (named !== undefined && named !== pin.commit) problems.push({ problem: 'ref', expected: `${ref.revision} -> ${pin.commit}`, found: `${ref.revision} -> ${named}` });
    }
    out.push({ ...base, state: problems.length > 0 ? 'differs' : 'ok', problems });
  }
  return out;
}
