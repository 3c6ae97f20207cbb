/**
 * Every failure a user can provoke from the shell ends with its documented exit code and one line
 * on stderr, never a stack trace. All through the built CLI (bin/swift-fetch.js), as a user runs it.
 */
import { spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hubEnv, pattern, storeArgs } from '../bundle/helpers.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { cliPath, run, runCli, tmpDir } from '../support/index.js';

let hub: FakeHub;
beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'demo/slow', files: { 'config.json': '{}', 'model.safetensors': pattern(4 * 1024 * 1024, 21) } });
});
afterAll(async () => hub?.close());

/** One line on stderr, starting with our name: no stack trace, no second line. */
function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^swift-fetch: /);
  expect(stderr).not.toMatch(/\n\s+at /);
  return lines[0]!;
}

/** The lease files a pull left in a store (a clean stop leaves none). */
async function leases(store: string): Promise<string[]> {
  return (await fsp.readdir(join(store, '.swift-fetch', 'leases')).catch(() => [] as string[])).filter((n) => !n.startsWith('.'));
}

describe('storage and usage errors', () => {
  it('--store naming a file: exit 6 for every command that uses the store', async () => {
    const dir = await tmpDir();
    const file = join(dir, 'not-a-dir');
    await fsp.writeFile(file, 'x');
    const cases: Array<[string[], string]> = [
      [['ls'], file], [['verify'], file], [['pull', 'hf://demo/slow'], file], [['init', 'hf://demo/slow'], file],
      [['path', 'hf://demo/slow'], file], [['gc'], file], [['pull', 'hf://demo/slow'], join(file, 'below')],
    ];
    for (const [args, store] of cases) {
      const r = await runCli([...args, '--store', store, '--state-dir', join(dir, 'state')], { env: hubEnv(hub) });
      expect(r.code, args.join(' ')).toBe(6);
      expect(oneLine(r.stderr)).toMatch(/is a file|part of its path is a file/);
    }
    expect(hub.log).toEqual([]);
  });

  it('a store that does not exist: ls, verify and gc say so and exit 3 (gc does not create it)', async () => {
    const dir = await tmpDir();
    for (const cmd of ['ls', 'verify', 'gc']) {
      const r = await runCli([cmd, ...storeArgs(dir)]);
      expect(r.code, cmd).toBe(3);
      expect(oneLine(r.stderr)).toContain(`no store at ${join(dir, 'store')}`);
      expect(r.stdout).toBe('');
    }
    expect(existsSync(join(dir, 'store'))).toBe(false);
  });

  it('a bad log level, from the flag or the environment: exit 2', async () => {
    const dir = await tmpDir();
    const flag = await runCli(['ls', '--log-level', 'loud', ...storeArgs(dir)]);
    expect(flag.code).toBe(2);
    expect(oneLine(flag.stderr)).toMatch(/'loud' is invalid.*fatal, error, warn, info, debug, trace, silent/);
    const env = await runCli(['pull', 'hf://demo/slow', ...storeArgs(dir)], { env: hubEnv(hub, { SWIFT_FETCH_LOG_LEVEL: 'chatty' }) });
    expect(env.code).toBe(2);
    expect(oneLine(env.stderr)).toContain('SWIFT_FETCH_LOG_LEVEL');
  });

  it('a 6-byte file that is not a tar: bundle import and verify exit 2', async () => {
    const dir = await tmpDir();
    const junk = join(dir, 'six.tar');
    await fsp.writeFile(junk, 'abcdef');
    for (const args of [['bundle', 'verify', junk], ['bundle', 'import', junk, ...storeArgs(dir)]]) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(oneLine(r.stderr)).toContain('not a tar bundle');
    }
  });
});

describe('stopping a pull from outside', () => {
  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('%s mid-download: exit %i, one line, no lease left behind', async (signal, code) => {
    const dir = await tmpDir();
    hub.perConnectionRate = 256 * 1024;
    try {
      const child = spawn(process.execPath, [cliPath, 'pull', 'hf://demo/slow', '--json', ...storeArgs(dir)], { env: childEnv(hubEnv(hub)) });
      let out = '';
      let err = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      // Wait until bytes flow, so the signal lands mid-transfer.
      while (!/"type":"progress","bytesDone":[1-9]/.test(out)) await new Promise((r) => setTimeout(r, 20));
      child.kill(signal);
      expect(await exited).toBe(code);
      expect(oneLine(err)).toBe('swift-fetch: interrupted');
      expect(await leases(join(dir, 'store'))).toEqual([]);
    } finally {
      hub.perConnectionRate = undefined;
    }
  });

  it('stdout closed under it (pull | head -c1): ends quietly with 141, no lease left behind', async () => {
    const dir = await tmpDir();
    hub.perConnectionRate = 256 * 1024;
    try {
      const script = `"${process.execPath}" "${cliPath}" pull hf://demo/slow ${storeArgs(dir).join(' ')} 2>"${dir}/err" | head -c1 >/dev/null; echo "\${PIPESTATUS[0]}"`;
      const r = await run('bash', ['-c', script], { env: hubEnv(hub) });
      expect(r.stdout.trim()).toBe('141');
      expect(await fsp.readFile(join(dir, 'err'), 'utf8')).toBe('');
      expect(await leases(join(dir, 'store'))).toEqual([]);
      expect(existsSync(join(dir, 'store', 'models'))).toBe(false);
    } finally {
      hub.perConnectionRate = undefined;
    }
  });
});

/** The test's environment with `extra` applied (undefined removes a variable), as runCli does. */
function childEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}
