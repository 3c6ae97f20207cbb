import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { runCli, tmpDir } from '../support/index.js';

let hub: FakeHub;
beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'demo/sel', files: { 'config.json': '{}', 'model.safetensors': 'w'.repeat(10_000) } });
});
afterAll(async () => hub?.close());

const env = () => ({ HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: undefined, MODELSCOPE_API_TOKEN: undefined, HTTPS_PROXY: undefined, HTTP_PROXY: undefined });

describe('a selection that matches nothing', () => {
  it.each([
    [['--include', '*.gguf'], /--include "\*\.gguf"/],
    [['--include', '*.gguf', '--include', 'onnx/'], /--include "\*\.gguf" "onnx\/"/],
    [['--exclude', '*'], /--exclude "\*"/],
  ])('%j exits 3 naming the patterns, and publishes nothing', async (flags, named) => {
    for (const h of ['hf', 'ms']) {
      const dir = await tmpDir();
      const store = join(dir, 'store');
      const r = await runCli(['pull', `${h}://demo/sel`, '--store', store, '--state-dir', join(dir, 'state'), ...flags], { env: env() });
      expect(r.code).toBe(3);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(named);
      expect(r.stderr).toMatch(/no file of .*demo\/sel.*\(2 files/);
      // Nothing published: no view, no record (the store is not even created).
      expect(existsSync(store)).toBe(false);
    }
  });

  it('a selection that matches something still pulls just that', async () => {
    const dir = await tmpDir();
    const r = await runCli(['pull', 'hf://demo/sel', '--store', join(dir, 'store'), '--state-dir', join(dir, 'state'), '-q', '--include', '*.json'], { env: env() });
    expect(r.code).toBe(0);
    expect(existsSync(join(r.stdout.trim(), 'config.json'))).toBe(true);
    expect(existsSync(join(r.stdout.trim(), 'model.safetensors'))).toBe(false);
  });
});
