import type { Command } from 'commander';
import { NotFoundError } from '../../core/errors.js';
import { parseRef } from '../../core/ref.js';
import { formatBytes } from '../../core/units.js';
import { Store } from '../../store/store.js';
import { checkStore, emitJson, globals } from '../context.js';

export function register(program: Command): void {
  program
    .command('rm')
    .description('remove a revision (or, without @REV, every revision of the repo) from all views and free its blobs')
    .argument('<ref>', 'model reference')
    .action(async (refText: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const ref = parseRef(refText);
      const store = new Store(checkStore(g.store, { mustExist: true }));
      const all = refText.includes('@')
        ? [await store.findRecord(ref, ref.revision)]
        : (await store.listRecords()).filter((r) => r.hub === ref.hub && r.org === ref.org && r.name === ref.name);
      if (all.length === 0) throw new NotFoundError(`${refText} is not in the store ${store.root}`, 'ESF_NOT_IN_STORE');
      for (const rec of all) await store.removeRevision(rec, rec.commit);
      const freed = await store.sweepBlobs({ immediate: all.flatMap((r) => r.files.map((f) => f.sha256)) });
      if (g.json) emitJson({ removed: all.map((r) => ({ ref: `${r.hub}://${r.org}/${r.name}`, commit: r.commit })), ...freed });
      else process.stdout.write(`removed ${all.length} revision(s), freed ${formatBytes(freed.freedBytes)}\n`);
    });
}
