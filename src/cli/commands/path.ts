import type { Command } from 'commander';
import { parseRef } from '../../core/ref.js';
import { Store } from '../../store/store.js';
import { checkStore, emitJson, globals } from '../context.js';

export function register(program: Command): void {
  program
    .command('path')
    .description('print the plain model directory of a pulled revision (for swift --model); offline')
    .argument('<ref>', 'model reference')
    .option('--view <view>', 'which view: plain (default), hf or ms', 'plain')
    .action(async (refText: string, o: { view: string }, cmd: Command) => {
      const g = globals(cmd);
      const ref = parseRef(refText);
      const store = new Store(checkStore(g.store, { mustExist: true }));
      const rec = await store.findRecord(ref, ref.revision);
      const path = o.view === 'hf' ? rec.paths.hf : o.view === 'ms' ? rec.paths.ms : rec.paths.plain;
      if (!path) {
        const { UsageError } = await import('../../core/errors.js');
        throw new UsageError(`--view ${o.view}: ${refText} has no such view (hf:// refs have plain and hf, ms:// refs plain and ms)`);
      }
      await store.touch(ref, rec.commit);
      if (g.json) emitJson({ ref: refText, commit: rec.commit, path, complete: rec.complete });
      else process.stdout.write(`${path}\n`);
    });
}
