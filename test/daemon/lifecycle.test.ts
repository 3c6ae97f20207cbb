/**
 * The daemon as a real process: `swift-fetch daemon --config FILE` against the fake hub.
 * Runs the built CLI (`bin/swift-fetch.js`, after `npm run build`): the exit codes are main.ts's own.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { cliArgs, spawnNode, tempDir, until, type Child } from './helpers.js';

let hub: FakeHub;
let dir: string;
let cleanup: () => Promise<void>;
const children: Child[] = [];
const WEIGHTS = Buffer.alloc(6 * 1024 * 1024);
for (let i = 0; i < WEIGHTS.length; i++) WEIGHTS[i] = (i * 31) & 0xff;

beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'org/slow', files: { 'config.json': '{"model_type":"x"}', 'model.safetensors': WEIGHTS } });
});
afterAll(() => hub.close());
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('sf-life-'));
});
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    await c.exited;
  }
  hub.perConnectionRate = undefined;
  await cleanup();
});

function daemon(config: string): Child {
  const { args, ts } = cliArgs('daemon');
  const c = spawnNode([...args, 'daemon', '--config', config], {
    ts,
    env: { HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: '', NO_PROXY: '*' },
  });
  children.push(c);
  return c;
}

async function urlOf(c: Child): Promise<string> {
  const line = await c.waitErrLine((l) => l.includes('"daemon started"'), 'daemon started');
  return (JSON.parse(line) as { url: string }).url;
}

async function writeConfig(extra = ''): Promise<string> {
  const file = join(dir, 'config.yaml');
  await writeFile(file, `store: ${join(dir, 'store')}\nstateDir: ${join(dir, 'state')}\nlisten: 127.0.0.1:0\nmodels: [hf://org/slow]\nlogLevel: info\n${extra}`);
  return file;
}

describe('swift-fetch daemon process', () => {
  it('exits 2 naming the key for a bad config', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(file, 'listen: 127.0.0.1:0\npeers:\n  port: abc\n');
    const c = daemon(file);
    const { code } = await c.exited;
    expect(code).toBe(2);
    expect(c.errLines.join('\n')).toContain('peers.port: expected an integer 1-65535, got "abc"');
  });

  it('on SIGTERM mid-download stops and exits 0; restarted, it finishes the model', async () => {
    hub.perConnectionRate = 256 * 1024; // slow enough that SIGTERM lands mid-transfer
    const file = await writeConfig();
    const c = daemon(file);
    const url = await urlOf(c);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    await until(async () => {
      const [m] = (await (await fetch(`${url}/v1/models`)).json()) as Array<{ state: string; bytesDone: number }>;
      return m?.state === 'downloading' && m.bytesDone > 0;
    }, 50);
    c.proc.kill('SIGTERM');
    const { code, signal } = await c.exited;
    expect(signal).toBeNull();
    expect(code).toBe(0);
    const logs = c.errLines.map((l) => JSON.parse(l) as { msg: string; module?: string });
    expect(logs.some((l) => l.msg === 'stopped')).toBe(true);
    // One logger, a child per module.
    expect([...new Set(logs.map((l) => l.module))]).toEqual(expect.arrayContaining(['daemon', 'reconciler', 'pull']));

    hub.perConnectionRate = undefined;
    const again = daemon(file);
    const url2 = await urlOf(again);
    const models = await until(async () => {
      const list = (await (await fetch(`${url2}/v1/models`)).json()) as Array<{ state: string; path: string }>;
      return list[0]?.state === 'ready' ? list : undefined;
    }, 50);
    // Buffer.equals: a deep toEqual over megabytes is needlessly slow.
    expect((await readFile(join(models[0]!.path, 'model.safetensors'))).equals(WEIGHTS)).toBe(true);
    again.proc.kill('SIGINT');
    expect((await again.exited).code).toBe(0);
  }, 120_000);
});
