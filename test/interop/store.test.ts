// The real clients must read what swift-fetch writes: huggingface_hub and transformers from the HF
// cache view, modelscope from the ModelScope view, and anything from the plain directory.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_REPO, demoFiles } from '../fakehub/demo.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { pythonEnv, requirePython, runCli, runPython, skipWithoutPython, tmpDir } from '../support/index.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const files = demoFiles();
const expected = Object.fromEntries(Object.entries(files).map(([p, b]) => [p, sha(b)]));

let hub: FakeHub;
let root: string;
let store: string;
const plain: Record<string, string> = {};

// Prints {relative path: sha256} for every file under a directory, following symlinks.
const HASH_TREE = `
import hashlib, json, os, sys
root = sys.argv[1]
out = {}
for d, _, fs in os.walk(root):
    for f in fs:
        p = os.path.join(d, f)
        out[os.path.relpath(p, root)] = hashlib.sha256(open(p, 'rb').read()).hexdigest()
print(json.dumps(out))
`;

describe.skipIf(skipWithoutPython())('real clients read the store offline', () => {
  beforeAll(async () => {
    requirePython();
    hub = await startFakeHub();
    await hub.addRepo({ id: DEMO_REPO, files });
    root = await tmpDir();
    store = join(root, 'store');
    const env = { HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: undefined, MODELSCOPE_API_TOKEN: undefined };
    for (const h of ['hf', 'ms']) {
      const r = await runCli(['pull', `${h}://${DEMO_REPO}`, '--store', store, '--state-dir', join(root, 'state'), '-q'], { env });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      plain[h] = r.stdout.trim();
    }
    // From here on, no network: the hub is gone.
    await hub.close();
  });
  afterAll(async () => hub?.close().catch(() => undefined));

  it('huggingface_hub.snapshot_download (HF_HUB_OFFLINE=1) returns the snapshot with every file intact', async () => {
    const r = await runPython(
      `import json, sys\nfrom huggingface_hub import snapshot_download\nprint(snapshot_download(sys.argv[1]))`,
      [DEMO_REPO],
      { env: pythonEnv({ HF_HOME: join(store, 'huggingface'), HF_HUB_OFFLINE: '1' }) },
    );
    expect(r.stderr).not.toMatch(/Traceback/);
    expect(r.code).toBe(0);
    const snap = r.stdout.trim().split('\n').at(-1)!;
    expect(snap).toBe(join(store, 'huggingface', 'hub', 'models--demo--tiny-model', 'snapshots', plain.hf!.split('/').at(-1)!));
    const h = await runPython(HASH_TREE, [snap]);
    expect(JSON.parse(h.stdout)).toEqual(expected);
  });

  it('transformers loads the config and tokenizer offline from the store (no torch)', async () => {
    const r = await runPython(
      [
        'import sys',
        'from transformers import AutoConfig, AutoTokenizer',
        'c = AutoConfig.from_pretrained(sys.argv[1])',
        't = AutoTokenizer.from_pretrained(sys.argv[1])',
        'print(c.model_type, c.n_layer, t("hello world").input_ids)',
      ].join('\n'),
      [DEMO_REPO],
      { env: pythonEnv({ HF_HOME: join(store, 'huggingface'), HF_HUB_OFFLINE: '1', TRANSFORMERS_OFFLINE: '1' }) },
    );
    expect(r.stderr).not.toMatch(/Traceback/);
    expect(r.code).toBe(0);
    const line = r.stdout.trim().split('\n').at(-1)!;
    expect(line).toMatch(/^gpt2 2 \[\d+, \d+\]$/);
  });

  it("modelscope's offline load (local_files_only=True) finds the ms:// pull", async () => {
    const r = await runPython(
      `import sys\nfrom modelscope import snapshot_download\nprint(snapshot_download(sys.argv[1], local_files_only=True))`,
      [DEMO_REPO],
      { env: pythonEnv({ MODELSCOPE_CACHE: join(store, 'modelscope') }) },
    );
    expect(r.stderr).not.toMatch(/Traceback/);
    expect(r.code).toBe(0);
    const dir = r.stdout.trim().split('\n').at(-1)!;
    expect(dir.startsWith(join(store, 'modelscope'))).toBe(true);
    const h = await runPython(HASH_TREE, [dir]);
    expect(JSON.parse(h.stdout)).toEqual(expected);
  });

  it('the directory from `swift-fetch path` holds every file of the repo', async () => {
    for (const h of ['hf', 'ms']) {
      const r = await runCli(['path', `${h}://${DEMO_REPO}`, '--store', store]);
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe(plain[h]);
      const got: Record<string, string> = {};
      for (const p of Object.keys(files)) got[p] = sha(await fsp.readFile(join(r.stdout.trim(), p)));
      expect(got).toEqual(expected);
    }
  });
});
