/**
 * The hash pool against real files and real worker threads. A SIGTERM during a 5,000-file pull
 * once hung the CLI forever: the abort dropped a blob's hash job, a write that landed a moment
 * later completed the file, and its finish() waited on a worker that had forgotten the job.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HashPool } from '../../src/transfer/hash-pool.js';
import { tmpDir } from '../support/index.js';

describe('HashPool', () => {
  it('hashes a file as its prefix grows', async () => {
    const path = join(await tmpDir(), 'blob');
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    await fsp.writeFile(path, bytes);
    const pool = new HashPool(1);
    try {
      const job = pool.open(path, bytes.length, true);
      job.advance(1024 * 1024);
      job.advance(2 * 1024 * 1024);
      const d = await job.finish(bytes.length);
      expect(d.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
      expect(d.gitOid).toBe(createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex'));
    } finally {
      await pool.close();
    }
  });

  it('a finish after a drop rejects at once instead of waiting forever', async () => {
    const path = join(await tmpDir(), 'blob');
    await fsp.writeFile(path, randomBytes(4096));
    const pool = new HashPool(1);
    try {
      const job = pool.open(path, 4096, false);
      job.advance(2048);
      job.drop();
      await expect(job.finish(4096)).rejects.toThrow(/stopped/);
      // The pool still serves other jobs.
      const other = pool.open(path, 4096, false);
      expect((await other.finish(4096)).sha256).toMatch(/^[0-9a-f]{64}$/);
    } finally {
      await pool.close();
    }
  });
});
