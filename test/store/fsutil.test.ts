import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StorageError } from '../../src/core/errors.js';
import { storageError, writeFileAtomic } from '../../src/store/fsutil.js';
import { repoRoot, tmpDir } from '../support/index.js';

const errno = (code: string) => Object.assign(new Error(`${code}: simulated by the kernel`), { code });

describe('storageError', () => {
  it('names each failure for what it is, exit 6', () => {
    const cases: Array<[string, RegExp]> = [
      ['ENOSPC', /no space left/],
      ['EDQUOT', /no space left/],
      ['EROFS', /read-only/],
      ['EACCES', /permission denied/],
      ['EPERM', /permission denied/],
      ['EIO', /I\/O error/],
    ];
    for (const [code, msg] of cases) {
      const e = storageError(errno(code), '/store/x');
      expect(e).toBeInstanceOf(StorageError);
      expect(e.message).toMatch(msg);
      expect(e.message).toContain('/store/x');
      expect((e as StorageError).exitCode).toBe(6);
    }
    // EIO is a failing disk, not a permission problem: the two need different fixes.
    expect(storageError(errno('EIO'), '/s').message).not.toMatch(/permission/);
    const other = errno('ENOENT');
    expect(storageError(other, '/s')).toBe(other);
  });
});

describe('writeFileAtomic', () => {
  it('replaces content whole and leaves no temp files', async () => {
    const dir = await tmpDir();
    const p = join(dir, 'a', 'b', 'rec.json');
    await writeFileAtomic(p, 'one');
    await writeFileAtomic(p, 'two', { durable: false });
    expect(await fsp.readFile(p, 'utf8')).toBe('two');
    expect(await fsp.readdir(join(dir, 'a', 'b'))).toEqual(['rec.json']);
  });

  // What survives a power cut cannot be observed without one; the system calls can. strace shows
  // the file synced before it is renamed into place, then every folder the new name depends on.
  const strace = spawnSync('strace', ['-V']).status === 0;
  const inCI = process.env.CI === 'true' || process.env.CI === '1';
  it.skipIf(!strace && !inCI)('durable writes fsync the file before the rename, then its folder and the folders it created', async () => {
    expect(strace, 'strace is needed for this test (CI installs it)').toBe(true);
    const dir = await tmpDir();
    const trace = join(dir, 'trace');
    const run = (target: string, opts: string) => {
      const code = `import(${JSON.stringify(join(repoRoot, 'dist/store/fsutil.js'))}).then((m) => m.writeFileAtomic(${JSON.stringify(target)}, '{}'${opts}))`;
      const r = spawnSync('strace', ['-f', '-qq', '-y', '-e', 'trace=fsync,fdatasync,rename,renameat,renameat2', '-o', trace, process.execPath, '-e', code]);
      expect(r.status, r.stderr.toString()).toBe(0);
      return existsSync(trace) ? readFileSync(trace, 'utf8').split('\n') : [];
    };
    const target = join(dir, 'store', 'records', 'rec.json');
    // Records and refs are written with the default options.
    const lines = run(target, '');
    const renamed = lines.findIndex((l) => /rename/.test(l) && l.includes(`"${target}"`));
    expect(renamed).toBeGreaterThan(0);
    expect(lines.slice(0, renamed).some((l) => l.includes(`<${target}.tmp-`) && /f(data)?sync\(/.test(l) && l.endsWith('= 0'))).toBe(true);
    const after = lines.slice(renamed + 1);
    for (const d of [join(dir, 'store', 'records'), join(dir, 'store'), dir]) {
      expect(after.some((l) => l.includes(`fsync(`) && l.includes(`<${d}>) = 0`)), `fsync of ${d}`).toBe(true);
    }
    // A cache write (durable: false) costs no fsync at all.
    const cache = run(join(dir, 'store', 'aliases', 'x'), ', { durable: false }');
    expect(cache.filter((l) => /fsync|fdatasync/.test(l))).toEqual([]);
  });
});
