import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEMO_REPO, demoFiles, spawnFakeHub, writeDemo } from '../fakehub/index.js';
import { pythonBin, pythonEnv, requirePython, run, runPython, skipWithoutPython, tmpDir } from '../support/index.js';
import { expectSameFiles } from './fixtures.js';

const LOAD = `
import json, sys
from transformers import AutoConfig, AutoTokenizer
from safetensors.numpy import load_file
d = sys.argv[1]
cfg = AutoConfig.from_pretrained(d, local_files_only=True)
tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
ids = tok("Hello world fetch unknownword")["input_ids"]
tensors = load_file(d + "/model.safetensors")
print(json.dumps({"model_type": cfg.model_type, "ids": ids, "unk": tok.unk_token_id,
                  "shapes": {k: list(v.shape) for k, v in tensors.items()}}))
`;

describe.skipIf(skipWithoutPython())('the offline demo repo', () => {
  it('loads with transformers (config + tokenizer) and safetensors', async () => {
    requirePython();
    const dir = await writeDemo(await tmpDir());
    const home = await tmpDir();
    const res = await runPython(LOAD, [dir], { env: pythonEnv({ HOME: home, HF_HOME: join(home, 'hf'), HF_HUB_OFFLINE: '1', TRANSFORMERS_OFFLINE: '1' }) });
    expect(res.code, res.stderr).toBe(0);
    const out = JSON.parse(res.stdout.trim().split('\n').pop()!) as { model_type: string; ids: number[]; unk: number; shapes: Record<string, number[]> };
    expect(out.model_type).toBe('gpt2');
    expect(out.ids).toHaveLength(4);
    expect(out.ids.at(-1)).toBe(out.unk);
    expect(out.ids.slice(0, 3).every((i) => i !== out.unk)).toBe(true);
    expect(out.shapes['wte.weight']).toEqual([64, 64]);
  });

  it('is served by the standalone fake hub to hf download and modelscope', async () => {
    requirePython();
    const root = await tmpDir();
    await writeDemo(root);
    const proc = await spawnFakeHub(['--root', root, '--port', '0']);
    try {
      const home = await tmpDir();
      const hfHome = join(home, 'hf');
      const hf = await run(join(dirname(pythonBin()), 'hf'), ['download', DEMO_REPO], { env: pythonEnv({ HOME: home, HF_HOME: hfHome, HF_ENDPOINT: proc.hfEndpoint }) });
      expect(hf.code, hf.stderr).toBe(0);
      const path = /path:\s*(\S+)/.exec(hf.stdout)?.[1] ?? hf.stdout.trim().split('\n').pop()!;
      await expectSameFiles(path, demoFiles());

      const ms = await runPython('import sys\nfrom modelscope import snapshot_download\nprint(snapshot_download(sys.argv[1]))', [DEMO_REPO], {
        env: pythonEnv({ HOME: home, MODELSCOPE_CACHE: join(home, 'ms'), MODELSCOPE_ENDPOINT: proc.msEndpoint }),
      });
      expect(ms.code, ms.stderr).toBe(0);
      await expectSameFiles(ms.stdout.trim().split('\n').pop()!, demoFiles());
    } finally {
      await proc.kill();
    }
  });
});
