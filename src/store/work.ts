/**
 * Work folders: a pull's pin folder (partial/pin-*, a second link to every blob it uses until it
 * publishes, so no sweep takes them) and a publish's staging folder (tmp/stage-*, a view being
 * built before it is renamed into place). A process that dies leaves its folder behind, holding
 * blobs and space forever. So each folder names its maker in `.owner` (state/host.ts), and GC
 * removes those whose maker is dead, by the same judgement as leases:
 *  - same boot and PID namespace as the maker: its pid is checked (gone, zombie or reused = dead);
 *  - otherwise (another node or pod): a pin folder is orphaned once the revision lease it was made
 *    under is no longer held by its maker; a staging folder once it is older than STAGE_MAX_AGE_MS
 *    (a publish renames its stage within seconds or minutes);
 *  - a folder without a readable `.owner` (older versions) is left alone.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ownIdentity, processLiveness } from '../state/host.js';
import { ensureDir, lstatOrUndefined, storageError, uniqueSuffix, writeFileAtomic } from './fsutil.js';
import type { StoreLayout } from './layout.js';
import { listLeases } from './lease.js';

const OWNER = '.owner';
export const STAGE_MAX_AGE_MS = 6 * 60 * 60_000;

const ownerSchema = z.object({
  host: z.string(),
  pid: z.number(),
  boot: z.string(),
  pidns: z.string(),
  pidStart: z.string(),
  /** The lease the maker held while the folder was in use (pin folders: the revision lease). */
  lease: z.string().optional(),
  createdAt: z.number(),
});
type Owner = z.infer<typeof ownerSchema>;

export type WorkKind = 'pin' | 'stage';

/** Make a work folder, naming this process as its maker (and `lease`, the lease it works under). */
export async function makeWorkDir(l: StoreLayout, kind: WorkKind, lease?: string): Promise<string> {
  const parent = kind === 'pin' ? l.partialDir : l.tmpDir;
  const dir = join(parent, `${kind}-${uniqueSuffix()}`);
  try {
    await ensureDir(l.root, parent);
    await fsp.mkdir(dir);
    const owner: Owner = { ...ownIdentity(), ...(lease ? { lease } : {}), createdAt: Date.now() };
    // Not fsynced: after a power cut every maker is dead anyway, and a missing owner only delays cleanup.
    await writeFileAtomic(join(dir, OWNER), JSON.stringify(owner), { durable: false });
  } catch (e) {
    throw storageError(e, dir);
  }
  return dir;
}

/** Work folders whose maker is dead; removed unless `dryRun`. */
export async function sweepWorkDirs(l: StoreLayout, dryRun = false): Promise<string[]> {
  const candidates: Array<{ dir: string; kind: WorkKind }> = [];
  for (const [parent, kind] of [[l.partialDir, 'pin'], [l.tmpDir, 'stage']] as const) {
    for (const e of await fsp.readdir(parent, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory() && e.name.startsWith(`${kind}-`)) candidates.push({ dir: join(parent, e.name), kind });
    }
  }
  if (candidates.length === 0) return [];
  const leases = new Map((await listLeases(l.leaseDir)).map((x) => [x.name, x]));
  const orphans: string[] = [];
  for (const c of candidates) {
    const owner = await readOwner(c.dir);
    if (owner === undefined) continue;
    const liveness = processLiveness(owner);
    let dead = liveness === 'dead';
    if (liveness === 'unknown') {
      if (c.kind === 'stage') dead = Date.now() - owner.createdAt > STAGE_MAX_AGE_MS;
      else if (owner.lease !== undefined) {
        const held = leases.get(owner.lease);
        dead = !held || held.expired || held.info.pid !== owner.pid || held.info.host !== owner.host;
      }
    }
    if (!dead) continue;
    orphans.push(c.dir);
    if (!dryRun) await fsp.rm(c.dir, { recursive: true, force: true });
  }
  return orphans;
}

async function readOwner(dir: string): Promise<Owner | undefined> {
  const p = join(dir, OWNER);
  if (!(await lstatOrUndefined(p))?.isFile()) return undefined;
  try {
    const r = ownerSchema.safeParse(JSON.parse(await fsp.readFile(p, 'utf8')));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}
