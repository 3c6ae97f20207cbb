/**
 * Progress a person can trust, seen on a real terminal: the built CLI runs under `script`, which
 * gives it a pseudo-terminal, against the fake hub; the test reads what the terminal received.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hubEnv, pattern, storeArgs } from '../bundle/helpers.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { DEFAULT_CONNECTIONS } from '../../src/transfer/index.js';
import { cliPath, freePort as closedPort, run, runCli, tmpDir } from '../support/index.js';
import { toolMissing } from '../support/tools.js';

const NO_PTY = toolMissing('script', 'to give the CLI a terminal (util-linux)');

const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/** Run the CLI on a pseudo-terminal; returns everything the terminal received, escape codes removed. */
async function onTerminal(args: string[], env: Record<string, string | undefined>): Promise<{ code: number | null; screen: string }> {
  const cmd = [process.execPath, cliPath, ...args].map(quote).join(' ');
  const r = await run('script', ['-q', '-e', '-c', cmd, '/dev/null'], { env: { ...env, COLUMNS: '160', LINES: '40' } });
  // Keep the text and the frames: \r or "cursor to column 1" starts a redraw of the line; other escape codes go.
  const screen = r.stdout.replaceAll('\x1b[1G', '\r').replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '').replace(/[\u2588\u2591]/g, '');
  return { code: r.code, screen };
}


/** The frames drawn on the terminal, in order. */
const frames = (screen: string) => screen.split(/\r\n|\r|\n/).filter((f) => f.trim() !== '');

let hub: FakeHub;
const weights = pattern(8 * 1024 * 1024, 31);
beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'demo/bar', files: { 'config.json': '{"b":1}', 'model.safetensors': weights } });
});
afterAll(async () => hub?.close());

describe.skipIf(NO_PTY)('pull progress on a terminal (skipped without util-linux script)', () => {
  it('shows what it is doing while the hub is slow, before any byte moves, and never "eta 0s" at 0 %', async () => {
    const dir = await tmpDir();
    // The hub's first answer is a 503 asking to come back in 2 s: a slow hub, seen from the client.
    hub.fault({ kind: 'status', status: 503, retryAfter: 2, host: 'hub', times: 1 });
    try {
      const r = await onTerminal(['pull', 'hf://demo/bar', ...storeArgs(dir)], hubEnv(hub));
      expect(r.code, r.screen).toBe(0);
      const shown = frames(r.screen);
      // The first thing on screen says what is happening, and it keeps counting while the hub waits.
      expect(shown[0]).toBe('hf://demo/bar@main: resolving the revision (0 s)');
      expect(shown).toContain('hf://demo/bar@main: resolving the revision (1 s)');
      // And why it waits: the hub's answer, which retry this is of how many, and for how long.
      expect(shown).toContain('hf://demo/bar@main: the hub API: retry 1 of 5 in 2 s (HTTP 503)');
      const bars = shown.filter((f) => / \d+% /.test(f));
      expect(bars.at(-1)).toMatch(/\| 100% 8\.0 MiB\/8\.0 MiB .* eta 0s$/);
      for (const b of bars) if (/\| 0% /.test(b)) expect(b).not.toMatch(/eta 0s/);
    } finally {
      hub.clearFaults();
    }
  });

  it('a hub that is down: each retry of its API is an event (n of m, the wait, the reason), then exit 7', async () => {
    const dir = await tmpDir();
    const down = `http://127.0.0.1:${await closedPort()}`;
    const r = await runCli(['pull', 'hf://demo/bar', ...storeArgs(dir), '--json'], { env: { ...hubEnv(hub), HF_ENDPOINT: down } });
    expect(r.code, r.stderr).toBe(7);
    const retries = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.type === 'retry');
    expect(retries.map((e) => `${e.attempt} of ${e.of}`)).toEqual(['1 of 5', '2 of 5', '3 of 5', '4 of 5', '5 of 5']);
    for (const e of retries) expect(e).toMatchObject({ file: 'the hub API', reason: 'ECONNREFUSED' });
  }, 60_000);

  it('a file whose CDN fails says which retry of how many it is, and a retry that moves bytes earns the count back', async () => {
    const dir = await tmpDir();
    // Two refusals in a row, then a connection cut after 1 MiB, then the rest.
    hub.fault({ kind: 'status', status: 503, retryAfter: 0, host: 'cdn', path: 'model.safetensors', times: 2 });
    hub.fault({ kind: 'reset', afterBytes: 1024 * 1024, host: 'cdn', path: 'model.safetensors', times: 1 });
    try {
      const r = await runCli(['pull', 'hf://demo/bar', ...storeArgs(dir), '--json', '--connections', '1'], { env: hubEnv(hub) });
      expect(r.code, r.stderr).toBe(0);
      const retries = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.type === 'retry');
      expect(retries.map((e) => `${e.attempt} of ${e.of}`)).toEqual(['1 of 8', '2 of 8', '1 of 8']);
      for (const e of retries) expect(e.file).toBe('model.safetensors');
      expect(retries[0]!.reason).toMatch(/503/);
    } finally {
      hub.clearFaults();
    }
  }, 60_000);

  it('while another process downloads the revision, says so and keeps counting the seconds', async () => {
    const dir = await tmpDir();
    hub.perConnectionRate = 1024 * 1024;
    try {
      const first = spawn(process.execPath, [cliPath, 'pull', 'hf://demo/bar', '--json', '--connections', '2', ...storeArgs(dir)], { env: { ...process.env, ...hubEnv(hub), HF_TOKEN: '' } });
      let out = '';
      first.stdout.on('data', (b: Buffer) => (out += b.toString()));
      const firstDone = new Promise((r) => first.once('exit', r));
      while (!/"type":"progress","bytesDone":[1-9]/.test(out)) await new Promise((r) => setTimeout(r, 20));
      const r = await onTerminal(['pull', 'hf://demo/bar', ...storeArgs(dir, 'store')], hubEnv(hub));
      await firstDone;
      expect(r.code, r.screen).toBe(0);
      const waiting = frames(r.screen).filter((f) => f.includes('waiting for another process to download it'));
      expect(waiting[0]).toMatch(/\(0 s\)$/);
      expect(waiting.some((f) => /\(2 s\)$/.test(f)), waiting.join('\n')).toBe(true);
    } finally {
      hub.perConnectionRate = undefined;
    }
  });

  it('a resumed pull starts its bar at the bytes it already holds', async () => {
    const dir = await tmpDir();
    hub.perConnectionRate = 512 * 1024;
    let held = 0;
    try {
      // A first pull, interrupted once about half the weights are durable (Ctrl-C keeps the partial file).
      const child = spawn(process.execPath, [cliPath, 'pull', 'hf://demo/bar', '--json', '--connections', '4', ...storeArgs(dir)], { env: { ...process.env, ...hubEnv(hub), HF_TOKEN: '' } });
      let out = '';
      child.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        const last = [...out.matchAll(/"type":"progress","bytesDone":(\d+)/g)].at(-1);
        if (last && Number(last[1]) >= weights.length / 2 && child.exitCode === null) {
          held = Number(last[1]);
          child.kill('SIGINT');
        }
      });
      await new Promise((r) => child.once('exit', r));
      expect(held).toBeGreaterThan(0);
    } finally {
      hub.perConnectionRate = undefined;
    }
    const r = await onTerminal(['pull', 'hf://demo/bar', ...storeArgs(dir)], hubEnv(hub));
    expect(r.code, r.screen).toBe(0);
    const first = frames(r.screen).find((f) => / \d+% /.test(f))!;
    const pct = Number(/\| (\d+)% /.exec(first)![1]);
    // What the first run had made durable: about what it had reported, less what was in flight.
    expect(pct, first).toBeGreaterThanOrEqual(Math.floor((100 * held) / (weights.length + 7)) - 15);
    expect(pct).toBeGreaterThan(0);
  });
});

describe('pull --help', () => {
  it('shows the defaults and the global options that apply to it', async () => {
    const r = await runCli(['pull', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`(default: ${DEFAULT_CONNECTIONS})`);
    expect(r.stdout).toMatch(/--max-rate <rate>[\s\S]*default: unlimited/);
    const globals = r.stdout.slice(r.stdout.indexOf('Global Options:'));
    for (const flag of ['--store <dir>', '--state-dir <dir>', '--json', '--quiet', '--log-level <level>']) expect(globals).toContain(flag);
    expect(globals).toContain('SWIFT_FETCH_STORE');
  });
});
