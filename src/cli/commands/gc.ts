import type { Command } from 'commander';
import { formatBytes, parseSize } from '../../core/units.js';
import { readFile } from 'node:fs/promises';
import { UsageError } from '../../core/errors.js';
import { parseRef, repoKey, type ModelRef } from '../../core/ref.js';
import { revisionKey, runGc } from '../../store/gc.js';
import { Store } from '../../store/store.js';
import { checkStore, emitJson, globals } from '../context.js';
import { collect } from './pull.js';


export function register(program: Command): void {
  program
    .command('gc')
    .description('evict least-recently-used revisions down to a quota and free unreferenced blobs')
    .option('--max-bytes <size>', 'quota for the store, e.g. 100GiB (without it: only free unreferenced blobs)', (v) => parseSize(v, '--max-bytes'))
    .option('--keep <ref>', 'never evict this model (repeatable)', collect)
    .option('--config <file>', 'daemon config: its declared models are kept, its gc.maxBytes is the default quota')
    .option('--dry-run', 'print what would be evicted; change nothing')
    .action(async (o: { maxBytes?: number; keep?: string[]; config?: string; dryRun?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const explicitStore = cmd.optsWithGlobals<{ store?: string }>().store;
      const keep: ModelRef[] = (o.keep ?? []).map((r) => parseRef(r));
      let maxBytes = o.maxBytes ?? 0;
      let storeDir = g.store;
      if (o.config) {
        const { loadConfig, parseModelsFile } = await import('../../daemon/config.js');
        const cfg = await loadConfig(o.config);
        if (!explicitStore) storeDir = cfg.store;
        if (o.maxBytes === undefined) maxBytes = cfg.gc.maxBytes;
        keep.push(...cfg.models.map((m) => m.ref));
        if (cfg.modelsFile) {
          // Not knowing what is declared must stop a collection, not widen it.
          const text = await readFile(cfg.modelsFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
            throw new UsageError(`cannot read models file ${cfg.modelsFile}: ${e.code ?? e.message}`);
          });
          keep.push(...parseModelsFile(text, cfg.modelsFile).map((m) => m.ref));
        }
      }
      const store = new Store(checkStore(storeDir, { mustExist: true }));
      const pinned = new Set<string>();
      for (const ref of keep) {
        const commit = await store.localCommit(ref, ref.revision);
        pinned.add(commit ? revisionKey({ ...ref, commit }) : repoKey(ref));
      }
      const res = await runGc(store, { maxBytes, pinned, dryRun: Boolean(o.dryRun) });
      if (g.json) {
        emitJson({ type: 'gc', store: storeDir, maxBytes, ...res });
        return;
      }
      if (!res.ran) {
        process.stdout.write('another process is collecting this store; nothing done\n');
        return;
      }
      const verb = res.dryRun ? 'would evict' : 'evicted';
      for (const e of res.evicted) process.stdout.write(`${verb} ${e.ref}@${e.commit} (${formatBytes(e.bytes)}, last used ${e.lastUsedAt})\n`);
      process.stdout.write(
        res.dryRun
          ? `store uses ${formatBytes(res.usedBytesBefore)}; after collection about ${formatBytes(res.usedBytesAfter)}\n`
          : `freed ${formatBytes(res.freedBytes)} in ${res.freedBlobs} blobs; store uses ${formatBytes(res.usedBytesAfter)}\n`,
      );
      if (res.overQuota) process.stdout.write(`still over the quota of ${formatBytes(maxBytes)}: what remains is kept or in use\n`);
    });
}
