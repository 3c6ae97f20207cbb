/**
 * Provenance of bytes that came from a peer: two real swarm nodes (HTTP peer routes, real stores),
 * the fake hub behind them, and the real pull.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pullModel } from '../../src/pull/index.js';
import { hubEnv, pattern } from '../bundle/helpers.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { startSwarm, type SwarmNode } from '../p2p/harness.js';

let hub: FakeHub;
let repo: AddedRepo;
let nodes: SwarmNode[] = [];
const weights = pattern(3 * 1024 * 1024 + 9, 5);

beforeAll(async () => {
  hub = await startFakeHub();
  repo = await hub.addRepo({ id: 'demo/shared', files: { 'config.json': '{"shared":1}', 'model.safetensors': weights } });
  nodes = await startSwarm(2, { token: 'peer-token-for-provenance-test' });
});
afterAll(async () => {
  await Promise.all(nodes.map((n) => n.close()));
  await hub?.close();
});

describe('provenance', () => {
  it('records, per file, the bytes that came from a peer and those that came from the origin', async () => {
    const env = hubEnv(hub) as NodeJS.ProcessEnv;
    const pull = (n: SwarmNode) =>
      pullModel('hf://demo/shared', { store: n.store.root, stateDir: n.stateDir, env, engineHooks: n.p2p!.engineHooks(), connections: 4 });
    const first = await pull(nodes[0]!);
    hub.resetStats();
    const second = await pull(nodes[1]!);
    expect(second.commit).toBe(repo.commit);
    const big = (rec: typeof first.record) => rec.files.find((f) => f.path === 'model.safetensors')!;
    // The first node had no peer with the content: every byte from the origin.
    expect(big(first.record).from).toMatchObject({ via: 'download', hub: 'hf', commit: repo.commit, bytes: { origin: weights.length, peer: 0, replica: 0 } });
    // The second got it from the first; what the record says matches what the hub sent it.
    const from = big(second.record).from!;
    expect(from.via).toBe('download');
    expect(from.bytes!.peer).toBeGreaterThan(0);
    expect(from.bytes!.origin + from.bytes!.peer).toBe(weights.length);
    expect(from.bytes!.origin).toBeLessThanOrEqual(hub.bytesSent({ path: 'model.safetensors' }));
  });
});
