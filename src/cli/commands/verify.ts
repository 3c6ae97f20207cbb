import type { Command } from 'commander';
import { IntegrityError } from '../../core/errors.js';
import { parseRef } from '../../core/ref.js';
import { Store, type PublishRecord } from '../../store/store.js';
import { verifyRecord } from '../../store/verify.js';
import { checkStore, emitJson, globals } from '../context.js';

export function register(program: Command): void {
  program
    .command('verify')
    .description('re-hash published models against their recorded SHA-256 (all when no ref is given)')
    .argument('[ref...]', 'model references')
    .action(async (refs: string[], _o: unknown, cmd: Command) => {
      const g = globals(cmd);
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
