/**
 * The daemon as a real process: `swift-fetch daemon --config FILE` against the fake hub.
 * Runs the built CLI (`bin/swift-fetch.js`, after `npm run build`): the exit codes are main.ts's own.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DaemonClient } from '../../src/daemon/client.js';
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

function daemon(config: string | string[]): Child {
  const { args, ts } = cliArgs('daemon');
  const c = spawnNode([...args, 'daemon', ...(typeof config === 'string' ? ['--config', config] : config)], {
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

  it('on SIGTERM mid-download stops, ends event streams with a final event and exits 0; restarted, it finishes the model', async () => {
    hub.perConnectionRate = 256 * 1024; // slow enough that SIGTERM lands mid-transfer
    const file = await writeConfig();
    const c = daemon(file);
    const url = await urlOf(c);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    await until(async () => {
      const [m] = (await (await fetch(`${url}/v1/models`)).json()) as Array<{ state: string; bytesDone: number }>;
      return m?.state === 'downloading' && m.bytesDone > 0;
    }, 50);
    // A follower of the model's event stream gets a final event, not a cut connection.
    const client = new DaemonClient(url);
    const followed = (async () => {
      const got: string[] = [];
      for await (const e of client.events('hf://org/slow@main', 'ready')) got.push(`${e.event}:${e.model.state}`);
      return got;
    })();
    await new Promise((r) => setTimeout(r, 200));
    c.proc.kill('SIGTERM');
    const { code, signal } = await c.exited;
    expect(signal).toBeNull();
    expect(code).toBe(0);
    const events = await followed;
    await client.close();
    expect(events.at(-1)).toMatch(/^shutdown:(downloading|pending)$/);
    expect(events.slice(0, -1).every((e) => e.startsWith('progress:'))).toBe(true);
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

  it('starts without a config file from --store, --listen and repeated --model (a quick try)', async () => {
    await hub.addRepo({ id: 'org/quick', files: { 'config.json': '{"q":1}' } });
    const c = daemon(['--store', join(dir, 'store'), '--state-dir', join(dir, 'state'), '--listen', '127.0.0.1:0', '--model', 'hf://org/quick', '--model', 'hf://org/slow', '--log-level', 'info']);
    const client = new DaemonClient(await urlOf(c));
    try {
      const models = await until(async () => {
        const list = await client.models();
        return list.length === 2 && list.every((m) => m.state === 'ready') ? list : undefined;
      }, 50);
      expect(models.map((m) => m.ref).sort()).toEqual(['hf://org/quick@main', 'hf://org/slow@main']);
      for (const m of models) expect(m.path!.startsWith(join(dir, 'store'))).toBe(true);
      expect(await readFile(join(models.find((m) => m.ref === 'hf://org/quick@main')!.path!, 'config.json'), 'utf8')).toBe('{"q":1}');
    } finally {
      await client.close();
    }
    c.proc.kill('SIGTERM');
    expect((await c.exited).code).toBe(0);
  });

  it.each([
    [['--listen', 'localhost'], /^swift-fetch: --listen: expected host:port/],
    [['--model', 'ftp://x/y'], /^swift-fetch: --model: invalid model reference "ftp:\/\/x\/y"/],
  ])('exits 2 for a bad flag %j, naming it', async (flags, message) => {
    const c = daemon(['--store', join(dir, 'store'), '--listen', '127.0.0.1:0', ...flags]);
    expect((await c.exited).code).toBe(2);
    expect(c.errLines).toHaveLength(1);
    expect(c.errLines[0]).toMatch(message);
  });

  it('exits 2 with one line saying so when its port is taken', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    const port = (taken.address() as AddressInfo).port;
    try {
      const c = daemon(['--store', join(dir, 'store'), '--state-dir', join(dir, 'state'), '--listen', `127.0.0.1:${port}`]);
      expect((await c.exited).code).toBe(2);
      expect(c.errLines).toEqual([`swift-fetch: cannot listen on 127.0.0.1:${port}: the address is already in use (another process listens there): stop it, or choose another port with listen: or --listen`]);
    } finally {
      await new Promise<void>((r) => taken.close(() => r()));
    }
  });
});
