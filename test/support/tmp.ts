import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, onTestFinished } from 'vitest';

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
