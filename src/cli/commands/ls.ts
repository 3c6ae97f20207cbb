import type { Command } from 'commander';
import { formatBytes } from '../../core/units.js';
import { Store } from '../../store/store.js';
import { checkStore, emitJson, globals } from '../context.js';

export function register(program: Command): void {
  program
    .command('ls')
    .description('list the revisions published in the store')
    .action(async (_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const records = await new Store(checkStore(g.store, { mustExist: true })).listRecords();
      for (const r of records) {
        const ref = `${r.hub}://${r.org}/${r.name}`;
        if (g.json) {
          emitJson({ ref, commit: r.commit, revisions: r.revisions, files: r.files.length, bytes: r.bytes, complete: r.complete, lastUsedAt: r.lastUsedAt, path: r.paths.plain });
        } else {
          const revs = r.revisions.length ? r.revisions.join(',') : '-';
          process.stdout.write(`${ref}\t${revs}\t${r.commit.slice(0, 12)}\t${r.files.length} files\t${formatBytes(r.bytes)}${r.complete ? '' : '\t(partial selection)'}\t${r.paths.plain}\n`);
        }
      }
    });
}
