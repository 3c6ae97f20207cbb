import { createReadStream, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { BlobHasher, checkDigests } from '../core/integrity.js';
import type { PublishRecord } from './store.js';

export interface VerifyProblem {
  path: string;
  problem: 'missing' | 'size' | 'hash';
  expected: string;
  found: string;
}

export async function hashFile(path: string, size: number, withGit: boolean): Promise<{ sha256: string; gitOid?: string; bytes: number }> {
  const h = new BlobHasher(size, withGit);
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return { ...h.digest(), bytes: h.length };
}

/** Re-hash every file of a published revision, reading through the plain view (what users load). */
export async function verifyRecord(rec: PublishRecord): Promise<VerifyProblem[]> {
  const problems: VerifyProblem[] = [];
  for (const f of rec.files) {
    const p = join(rec.paths.plain, ...f.path.split('/'));
    const st = await fsp.stat(p).catch(() => undefined);
    if (!st) {
      problems.push({ path: f.path, problem: 'missing', expected: `${f.size} bytes`, found: 'no file' });
      continue;
    }
    if (st.size !== f.size) {
      problems.push({ path: f.path, problem: 'size', expected: `${f.size} bytes`, found: `${st.size} bytes` });
      continue;
    }
    const bad = checkDigests({ sha256: f.sha256 }, await hashFile(p, f.size, false));
    if (bad) problems.push({ path: f.path, problem: 'hash', ...bad });
  }
  return problems;
}
