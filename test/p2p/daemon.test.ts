// The daemon composes P2P: three real `swift-fetch daemon` processes, each with its own store and
// state, declared the same model, started cold at the same moment, share it through their peer
// routes so the origin sends about one copy.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { spawnNode, type Child } from '../daemon/helpers.js';
import { cliPath, freePort, tmpDir } from '../support/index.js';
import { makeContent } from '../transfer/helpers.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-token-daemon-test';


let hub: FakeHub | undefined;
const children: Child[] = [];
async function stopChildren(): Promise<void> {
  for (const c of children) c.proc.kill('SIGKILL');
  await Promise.all(children.map((c) => c.exited));
}
afterAll(async () => {
  await stopChildren();
  await hub?.close();
});

interface ModelRow {
  ref: string;
  state: string;
  path: string | null;
}

describe('daemons share a model through P2P', () => {
  it('three cold daemons end ready with verified files; the origin sends about one copy', async () => {
    hub = await startFakeHub({ perConnectionRate: 4 * MiB });
    const weights = makeContent(24 * MiB, 11);
    await hub.addRepo({ id: 'org/shared', files: { 'model.safetensors': weights, 'config.json': '{"x":1}' } });
    const dir = await tmpDir();
    // The daemons must be gone before their stores are removed (finish hooks run last-first).
    onTestFinished(stopChildren);
    await fsp.writeFile(join(dir, 'peer-token'), `${TOKEN}\n`);
    const ports = [await freePort(), await freePort(), await freePort()];
    const urls = ports.map((p) => `http://127.0.0.1:${p}`);
    for (let i = 0; i < 3; i++) {
      const cfg = join(dir, `node${i}.yaml`);
      await fsp.writeFile(
        cfg,
        [
          `store: ${join(dir, `store${i}`)}`,
          `stateDir: ${join(dir, `state${i}`)}`,
          `listen: 127.0.0.1:${ports[i]}`,
          'models: ["hf://org/shared"]',
          'connections: 4',
          'chunkSize: 1MiB',
          'peers:',
          `  static: [${urls.join(', ')}]`,
          `  tokenFile: ${join(dir, 'peer-token')}`,
          'logLevel: warn',
        ].join('\n'),
      );
      children.push(
        spawnNode([cliPath, 'daemon', '--config', cfg], {
          ts: false,
          env: { HF_ENDPOINT: hub.hfEndpoint, HF_TOKEN: '', HTTPS_PROXY: '', HTTP_PROXY: '' },
        }),
      );
    }

    const models = async (url: string): Promise<ModelRow[]> => {
      try {
        const r = await fetch(`${url}/v1/models`);
        return r.ok ? ((await r.json()) as ModelRow[]) : [];
      } catch {
        return [];
      }
    };
    const deadline = Date.now() + 90_000;
    let rows: ModelRow[][] = [];
    while (Date.now() < deadline) {
      rows = await Promise.all(urls.map(models));
      if (rows.every((r) => r.length === 1 && r[0]!.state === 'ready')) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(rows.map((r) => r[0]?.state)).toEqual(['ready', 'ready', 'ready']);

    const want = createHash('sha256').update(weights).digest('hex');
    for (const r of rows) {
      const got = createHash('sha256').update(await fsp.readFile(join(r[0]!.path!, 'model.safetensors'))).digest('hex');
      expect(got).toBe(want);
    }
    const origin = hub.bytesSent({ path: 'model.safetensors' });
    expect(origin).toBeGreaterThanOrEqual(weights.length);
    // DESIGN.md's goal is <= 1.05 origin copies; this bound is looser on purpose. The files here
    // are small (6-24 MiB) in 1 MiB chunks, so one chunk fetched twice (two nodes deciding in the same
    // instant, before either sees the other's claim) is already 4-17 % of a copy, and two cores
    // running every node make such races common. The goal is measured with real model sizes in
    // bench/p2p.mjs (docs/benchmarks.md, P2P); here the bound catches a swarm that stopped sharing.
    expect(origin).toBeLessThanOrEqual(1.3 * weights.length);

    // The peer side shows in the metrics, and peer routes refuse requests without the token.
    const metrics = await Promise.all(urls.map(async (u) => (await fetch(`${u}/metrics`)).text()));
    const served = metrics.map((m) => Number(/^swift_fetch_peer_bytes_served_total (\S+)$/m.exec(m)?.[1] ?? NaN));
    expect(served.every((n) => Number.isFinite(n))).toBe(true);
    expect(served.reduce((a, b) => a + b, 0)).toBeGreaterThan(weights.length);
    const fromPeers = metrics.map((m) => Number(/^swift_fetch_bytes_received_total\{source="peer"\} (\S+)$/m.exec(m)?.[1] ?? NaN));
    expect(fromPeers.reduce((a, b) => a + b, 0)).toBeGreaterThan(weights.length);
    expect((await fetch(`${urls[0]}/v1/peer/info`)).status).toBe(401);
    expect((await fetch(`${urls[0]}/v1/peer/info`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
  }, 120_000);
});
