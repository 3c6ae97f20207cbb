import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, tmpDir } from '../support/index.js';

// hf://col--a/b and hf://col/a--b would both live in models--col--a--b (and records and refs under
// hf--col--a--b): the store could not tell them apart. The Hub refuses "--" in names; so do we.
describe('names that would share a folder in the store', () => {
  it.each(['hf://col--a/b', 'hf://col/a--b', 'ms://col--a/b'])('%s is refused with exit 2 before anything is written', async (ref) => {
    const dir = await tmpDir();
    const r = await runCli(['pull', ref, '--store', join(dir, 'store'), '--state-dir', join(dir, 'state')], {
      env: { HF_ENDPOINT: 'http://127.0.0.1:9', MODELSCOPE_ENDPOINT: 'http://127.0.0.1:9' },
    });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/"--" and "\.\." are not allowed/);
    expect(existsSync(join(dir, 'store'))).toBe(false);
  });
});
