import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cliPath, readTree, repoRoot, run, tmpDir } from './index.js';

describe('test support helpers', () => {
  it('repoRoot points at the package, cliPath at the bin shim', async () => {
    const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { name: string };
    expect(pkg.name).toBe('swift-fetch');
    expect(cliPath).toBe(join(repoRoot, 'bin', 'swift-fetch.js'));
  });

  let kept = '';
  it('tmpDir gives a fresh real directory per call', async () => {
    const a = await tmpDir();
    const b = await tmpDir();
    expect(a).not.toBe(b);
    await writeFile(join(a, 'x'), 'y');
    expect((await readTree(a)).get('x')!.toString()).toBe('y');
    kept = a;
  });
  it('tmpDir removed the previous test directory', () => {
    expect(kept).not.toBe('');
    expect(existsSync(kept)).toBe(false);
  });

  it('run collects output and exit code, passes env and stdin', async () => {
    const res = await run(process.execPath, ['-e', 'process.stdin.pipe(process.stdout); process.stderr.write(process.env.SF_X ?? "unset"); process.exitCode = 3'], {
      env: { SF_X: 'set' },
      input: 'hello',
    });
    expect(res).toEqual({ code: 3, signal: null, stdout: 'hello', stderr: 'set' });
    const removed = await run(process.execPath, ['-e', 'process.stdout.write(String(process.env.HOME))'], { env: { HOME: undefined } });
    expect(removed.stdout).toBe('undefined');
  });

  it('run kills a hung child with SIGKILL after timeoutMs', async () => {
    const res = await run(process.execPath, ['-e', 'process.on("SIGTERM", () => {}); setInterval(() => {}, 1000)'], { timeoutMs: 300 });
    expect(res.signal).toBe('SIGKILL');
  });
});
