import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, onTestFinished } from 'vitest';
import { inCI } from './ci.js';

const leftovers = new Set<string>();

afterAll(async () => {
  await Promise.all([...leftovers].map((d) => rm(d, { recursive: true, force: true })));
  leftovers.clear();
});

/**
 * A real, empty temporary directory. Inside a test it is removed when that test finishes;
 * called from a hook or at file level it is removed after the file's tests.
 * Set SWIFT_FETCH_KEEP_TMP=1 to keep them for debugging.
 */
export async function tmpDir(prefix = 'swift-fetch-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  if (process.env.SWIFT_FETCH_KEEP_TMP === '1') return dir;
  try {
    onTestFinished(async () => {
      await rm(dir, { recursive: true, force: true });
    });
  } catch {
    leftovers.add(dir);
  }
  return dir;
}

/**
 * Mount a small tmpfs on `dir` (root only), for disk-full tests; `onCleanup` is given its unmount.
 * Without the rights to mount: a failure in CI, else `skip` with the reason.
 */
export function mountTmpfs(dir: string, size: string, skip: (why: string) => void, onCleanup: (undo: () => void) => void): void {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (e) {
    const why = `cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): ${(e as Error).message.split('\n')[0]}`;
    if (inCI) throw new Error(`${why}; CI must run this test`);
    skip(why);
    return;
  }
  onCleanup(() => void execFileSync('umount', ['-l', dir], { stdio: 'pipe' }));
}
