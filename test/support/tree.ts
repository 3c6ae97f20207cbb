import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Every regular file under dir (following symlinks, as a reader of an HF snapshot would), keyed by
 * '/'-separated relative path. Entries for which `skip(relPath)` is true are left out.
 */
export async function readTree(dir: string, skip: (rel: string) => boolean = () => false): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  async function walk(abs: string, rel: string): Promise<void> {
    for (const e of await readdir(abs)) {
      const r = rel ? `${rel}/${e}` : e;
      if (skip(r)) continue;
      const p = join(abs, e);
      const st = await stat(p);
      if (st.isDirectory()) await walk(p, r);
      else if (st.isFile()) out.set(r, await readFile(p));
    }
  }
  await walk(dir, '');
  return out;
}
