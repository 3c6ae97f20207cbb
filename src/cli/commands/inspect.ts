/**
 * `swift-fetch inspect REF`: a published revision and where each of its files came from (the
 * provenance its publish record keeps), offline. Records written before provenance was kept still
 * read: their files say "unknown".
 */
import type { Command } from 'commander';
import { shortKeyId } from '../../bundle/index.js';
import { parseRef } from '../../core/ref.js';
import { formatBytes } from '../../core/units.js';
import { Store, type FileProvenance, type PublishRecord } from '../../store/store.js';
import { checkStore, emitJson, globals } from '../context.js';

/** Where one file came from, in one line. */
function origin(from: FileProvenance | undefined): string {
  if (!from) return 'unknown (published before provenance was recorded)';
  const parts: string[] = [];
  if (from.via === 'download') {
    const b = from.bytes ?? { origin: 0, peer: 0, replica: 0 };
    const moved = (['origin', 'peer', 'replica'] as const).filter((k) => b[k] > 0).map((k) => `${k} ${formatBytes(b[k])}`);
    parts.push(`downloaded${moved.length ? ` (${moved.join(', ')})` : ' (resumed, no new bytes)'} from ${from.hub} ${from.endpoint ?? ''}`.trimEnd());
  } else if (from.via === 'bundle') {
    parts.push(`bundle ${from.bundle?.file ?? '?'}${from.bundle?.signedBy ? ` signed by ${shortKeyId(from.bundle.signedBy)}` : ' (unsigned)'}`);
  } else {
    parts.push(`already in the store, listed by ${from.hub} ${from.endpoint ?? ''}`.trimEnd());
  }
  parts.push(`commit ${from.commit.slice(0, 12)}`, from.at);
  if (from.lock) parts.push(`checked against lock ${from.lock.file} (sha256:${from.lock.sha256.slice(0, 12)})`);
  return parts.join(' · ');
}

function printHuman(rec: PublishRecord): void {
  const out: string[] = [
    `${rec.hub}://${rec.org}/${rec.name}`,
    `  commit      ${rec.commit}`,
    `  revisions   ${rec.revisions.length ? rec.revisions.join(', ') : '-'}`,
    `  published   ${rec.publishedAt} (last used ${rec.lastUsedAt})`,
    `  files       ${rec.files.length}, ${formatBytes(rec.bytes)}${rec.complete ? '' : ' (a selection of the revision)'}`,
    `  path        ${rec.paths.plain}`,
  ];
  const width = Math.min(60, Math.max(...rec.files.map((f) => f.path.length)));
  for (const f of rec.files) {
    out.push(`  ${f.path.padEnd(width)}  ${formatBytes(f.size).padStart(10)}  ${f.sha256.slice(0, 12)}${f.verified ? '' : ' (unverified)'}  ${origin(f.from)}`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

export function register(program: Command): void {
  program
    .command('inspect')
    .description('show a pulled revision and where every file came from (hub, commit, time, origin or peer bytes, bundle, lock); offline')
    .argument('<ref>', 'model reference')
    .action(async (refText: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const ref = parseRef(refText);
      const rec = await new Store(checkStore(g.store, { mustExist: true })).findRecord(ref, ref.revision);
      if (!g.json) return printHuman(rec);
      emitJson({
        ref: `${rec.hub}://${rec.org}/${rec.name}@${rec.commit}`,
        hub: rec.hub, org: rec.org, name: rec.name, commit: rec.commit, revisions: rec.revisions,
        publishedAt: rec.publishedAt, lastUsedAt: rec.lastUsedAt, complete: rec.complete, bytes: rec.bytes, path: rec.paths.plain,
        files: rec.files.map((f) => ({ path: f.path, size: f.size, sha256: f.sha256, ...(f.gitOid ? { gitOid: f.gitOid } : {}), verified: f.verified, from: f.from ?? null })),
      });
    });
}
