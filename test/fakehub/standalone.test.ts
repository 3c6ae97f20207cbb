import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tmpDir } from '../support/index.js';
import { DEMO_REPO, demoFiles, spawnFakeHub, writeDemo } from './index.js';

describe('standalone fake hub (main.ts)', () => {
  it('serves every <org>/<name> folder of --root over both protocols and stops on SIGTERM', async () => {
    const root = await tmpDir();
    await writeDemo(root);
    const proc = await spawnFakeHub(['--root', root, '--port', '0', '--tree-page-size', '2', '--gated', `${DEMO_REPO}=tok`]);
    try {
      expect(proc.hfEndpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(proc.msEndpoint).toBe(proc.hfEndpoint);
      const auth = { authorization: 'Bearer tok' };
      expect((await fetch(`${proc.hfEndpoint}/api/models/${DEMO_REPO}/revision/main`)).status).toBe(401);
      const info = (await (await fetch(`${proc.hfEndpoint}/api/models/${DEMO_REPO}/revision/main`, { headers: auth })).json()) as { sha: string; siblings: Array<{ rfilename: string }> };
      expect(info.sha).toMatch(/^[0-9a-f]{40}$/);
      expect(info.siblings.map((s) => s.rfilename).sort()).toEqual(Object.keys(demoFiles()).sort());
      const tree = await fetch(`${proc.hfEndpoint}/api/models/${DEMO_REPO}/tree/main?recursive=true`, { headers: auth });
      expect(tree.headers.get('link')).toContain('rel="next"');
      const cfg = await fetch(`${proc.msEndpoint}/api/v1/models/${DEMO_REPO}/repo?Revision=master&FilePath=config.json`, { headers: auth });
      expect(Buffer.from(await cfg.arrayBuffer()).equals(await readFile(join(root, DEMO_REPO, 'config.json')))).toBe(true);
      const head = await fetch(`${proc.hfEndpoint}/${DEMO_REPO}/resolve/main/model.safetensors`, { method: 'HEAD', redirect: 'manual', headers: auth });
      expect(head.status).toBe(302);
      const blob = Buffer.from(await (await fetch(head.headers.get('location')!)).arrayBuffer());
      expect(blob.equals(demoFiles()['model.safetensors']!)).toBe(true);
      expect(proc.stderr()).toContain(DEMO_REPO);

      const exited = new Promise<number | null>((resolve) => proc.child.once('exit', (code) => resolve(code)));
      proc.child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      await proc.kill();
    }
  });

  it('--make-demo writes a demo repo with a valid safetensors file', async () => {
    const root = await tmpDir();
    const dir = await writeDemo(root);
    const st = await readFile(join(dir, 'model.safetensors'));
    expect(st.length).toBeGreaterThan(2 * 1024 * 1024);
    const headerLen = Number(st.readBigUInt64LE(0));
    const header = JSON.parse(st.subarray(8, 8 + headerLen).toString()) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    let end = 0;
    for (const [name, t] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      expect(t.dtype).toBe('F32');
      expect(t.data_offsets[1] - t.data_offsets[0]).toBe(t.shape.reduce((a, b) => a * b, 1) * 4);
      end = Math.max(end, t.data_offsets[1]);
    }
    expect(8 + headerLen + end).toBe(st.length);
    // Deterministic: the same bytes every time.
    expect(demoFiles()['model.safetensors']!.equals(st)).toBe(true);
  });
});
