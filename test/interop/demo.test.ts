import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { symlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { until } from '../daemon/helpers.js';
import { DEMO_REPO, demoFiles, spawnFakeHub, writeDemo } from '../fakehub/index.js';
import { pythonBin, pythonEnv, repoRoot, requirePython, run, runPython, skipWithoutPython, tmpDir } from '../support/index.js';
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

/** The README's by-hand demo: its two terminals' commands, split at "# terminal 2". */
function readmeDemo(): { terminal1: string[]; terminal2: string } {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const from = readme.indexOf('By hand, in two terminals');
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(from))![1]!;
  const [one, two] = block.split('# terminal 2\n');
  const terminal1 = one!.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#')).map((l) => l.replace(/\s+#.*$/, ''));
  return { terminal1, terminal2: two! };
}

describe('the README by-hand demo', () => {
  it('runs as written, in a checkout of its own (ports 8700 and 8701)', async () => {
    const python = !skipWithoutPython();
    if (python) requirePython();
    const { terminal1, terminal2 } = readmeDemo();
    expect(terminal1).toHaveLength(2);
    // A scratch checkout: the built CLI, the fake hub and the venv, without touching the repo's own .demo.
    const dir = await tmpDir();
    for (const name of ['package.json', 'bin', 'dist', 'node_modules', 'test', '.venv']) {
      if (existsSync(join(repoRoot, name))) await symlink(join(repoRoot, name), join(dir, name));
    }
    const make = await run('bash', ['-c', terminal1[0]!], { cwd: dir });
    expect(make.code, make.stderr).toBe(0);
    const hub = spawn('bash', ['-c', `exec ${terminal1[1]!}`], { cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '';
      hub.stdout.on('data', (b: Buffer) => (out += b.toString()));
      hub.stderr.on('data', (b: Buffer) => (out += b.toString()));
      await until(() => out.includes('MODELSCOPE_ENDPOINT=') || hub.exitCode !== null);
      expect(out).toContain('HF_ENDPOINT=http://127.0.0.1:8700');
      expect(out).toContain('CDN at http://127.0.0.2:8701');
      // Without a venv (outside CI) the README says to skip the last command: drop its two lines.
      const script = python ? terminal2 : terminal2.replace(/HF_HOME=[\s\S]*$/, '');
      const r = await run('bash', ['-e', '-c', script], { cwd: dir, env: { HF_TOKEN: undefined, HTTPS_PROXY: undefined, HTTP_PROXY: undefined } });
      expect(r.code, r.stderr).toBe(0);
      const printed = r.stdout.trim().split('\n');
      const plain = printed.find((l) => l.startsWith(join(dir, 'demo-store', 'models', 'hf', 'demo', 'tiny-model')) || l.startsWith('./demo-store/models/hf/'));
      expect(plain, r.stdout).toBeDefined();
      await expectSameFiles(resolve(dir, plain!), demoFiles());
      if (python) await expectSameFiles(resolve(dir, printed.at(-1)!), demoFiles());
    } finally {
      if (hub.pid && hub.exitCode === null) process.kill(-hub.pid, 'SIGTERM');
    }
  });
});
