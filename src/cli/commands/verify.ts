import type { Command } from 'commander';
import { IntegrityError, NotFoundError, UsageError } from '../../core/errors.js';
import { formatRef, parseRef } from '../../core/ref.js';
import { findPin, readLockFile, verifyStoreAgainstLock, type Lock } from '../../lock/index.js';
import { Store, type PublishRecord } from '../../store/store.js';
import { verifyRecord } from '../../store/verify.js';
import { checkStore, emitJson, globals, type GlobalOptions } from '../context.js';

/**
 * `verify --lock FILE`: the store against the lock (not against its own records). Exit 5 when
 * anything differs, 3 when a locked model is simply not in the store, 0 when all match.
 */
async function verifyLocked(g: GlobalOptions, file: string, refs: string[]): Promise<void> {
  // The lock first: a bad one is bad input (2) whatever the store.
  const { lock } = await readLockFile(file);
  const store = new Store(checkStore(g.store, { mustExist: true }));
  const models = refs.length === 0 ? lock.models : refs.map((r) => {
    const pin = findPin(lock, parseRef(r));
    if (!pin) throw new UsageError(`${formatRef(parseRef(r))} is not in the lock ${file}`, 'ESF_NOT_LOCKED');
    return pin;
  });
  const results = await verifyStoreAgainstLock(store, { ...lock, models } satisfies Lock);
  let differs = 0;
  let missing = 0;
  for (const r of results) {
    if (r.state === 'differs') differs++;
    if (r.state === 'missing') missing++;
    if (g.json) emitJson({ ref: r.ref, commit: r.commit, ok: r.state === 'ok', state: r.state, files: r.files, problems: r.problems });
    else if (r.state === 'ok') process.stdout.write(`ok       ${r.ref} ${r.commit.slice(0, 12)} (${r.files} files, as locked)\n`);
    else if (r.state === 'missing') process.stdout.write(`MISSING  ${r.ref} ${r.commit.slice(0, 12)}: not in the store\n`);
    else for (const p of r.problems) process.stdout.write(`DIFFERS  ${r.ref} ${r.commit.slice(0, 12)} ${p.path ?? '(refs)'}: ${p.problem}, locked ${p.expected}, found ${p.found}\n`);
  }
  if (differs > 0) throw new IntegrityError(`${differs} locked model(s) differ from the lock ${file} in this store`, { expected: 'the locked content', found: `${differs} model(s) differing` });
  if (missing > 0) throw new NotFoundError(`${missing} locked model(s) are not in the store ${store.root}: pull them with --lock ${file}`, 'ESF_NOT_IN_STORE');
}

export function register(program: Command): void {
  program
    .command('verify')
    .description('re-hash published models against their recorded SHA-256 (all when no ref is given), or with --lock against a lock file')
    .argument('[ref...]', 'model references')
    .option('--lock <file>', 'check the store against this lock instead: each locked commit present, every file with the locked SHA-256, revision names pointing at the locked commit')
    .action(async (refs: string[], o: { lock?: string }, cmd: Command) => {
      const g = globals(cmd);
      if (o.lock) return verifyLocked(g, o.lock, refs);
      const store = new Store(checkStore(g.store, { mustExist: true }));
      const records: PublishRecord[] = [];
      if (refs.length === 0) records.push(...(await store.listRecords()));
      for (const r of refs) {
        const ref = parseRef(r);
        records.push(await store.findRecord(ref, ref.revision));
      }
      let bad = 0;
      for (const rec of records) {
        const problems = await verifyRecord(rec);
        const label = `${rec.hub}://${rec.org}/${rec.name}@${rec.commit}`;
        bad += problems.length;
        if (g.json) emitJson({ ref: label, ok: problems.length === 0, files: rec.files.length, problems });
        else if (problems.length === 0) process.stdout.write(`ok       ${label} (${rec.files.length} files)\n`);
        else for (const p of problems) process.stdout.write(`CORRUPT  ${label} ${p.path}: ${p.problem}, expected ${p.expected}, found ${p.found}\n`);
      }
      if (bad > 0) throw new IntegrityError(`${bad} file(s) failed verification`, { expected: 'recorded hashes', found: `${bad} mismatches` });
    });
}
