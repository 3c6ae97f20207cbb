import type { Command } from 'commander';
import { parseRef } from '../../core/ref.js';
import { Store } from '../../store/store.js';
import { checkStore, emitJson, globals } from '../context.js';

export function register(program: Command): void {
  program
    .command('sha256sums')
    .description('print "<sha256>  <path>" for every file of a pulled revision (offline): `sha256sum -c` checks them in its directory (swift-fetch path REF)')
    .argument('<ref>', 'model reference')
    .action(async (refText: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const ref = parseRef(refText);
      const rec = await new Store(checkStore(g.store, { mustExist: true })).findRecord(ref, ref.revision);
      // Record files are sorted by path. Their paths never hold a backslash or a control character
      // (validateRepoPath), so no line needs sha256sum's escaped form; "  " is its text-mode separator.
      for (const f of rec.files) {
        if (g.json) emitJson({ sha256: f.sha256, path: f.path, size: f.size });
        else process.stdout.write(`${f.sha256}  ${f.path}\n`);
      }
    });
}
