import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { makeContent } from '../transfer/helpers.js';
import { blobRequestFor, startSwarm, type SwarmNode } from './harness.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-secret-token-for-tests';
const HUB_TOKEN = 'hf_hub_token_never_for_peers';

let hub: FakeHub | undefined;
let nodes: SwarmNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.map((n) => n.close()));
  nodes = [];
  await hub?.close();
  hub = undefined;
});

async function sha256File(p: string): Promise<string> {
  return createHash('sha256').update(await readFile(p)).digest('hex');
}

describe('cooperative cold start', () => {
  it('three nodes started at once end verified and pull about one copy from the origin', async () => {
    hub = await startFakeHub({ perConnectionRate: 6 * MiB });
    const weights = makeContent(24 * MiB, 7);
    const second = makeContent(6 * MiB + 12345, 8);
    const repo = await hub.addRepo({ id: 'org/model', files: { 'model.safetensors': weights, 'extra.bin': second, 'config.json': '{"a":1}' }, gated: { token: HUB_TOKEN } });
    const big = repo.files.filter((f) => f.size > 1024);
    const copyBytes = big.reduce((n, f) => n + f.size, 0);
    nodes = await startSwarm(3, { token: TOKEN, connections: 4, chunkSize: MiB });
    const reqs = big.map((f) => blobRequestFor(hub!.hfEndpoint, repo.id, repo.commit, f, { authorization: `Bearer ${HUB_TOKEN}` }));

    // Never counts itself: every node listed all three URLs, including its own.
    for (const n of nodes) expect(n.p2p!.discovery.live().map((p) => p.id).sort()).toEqual(nodes.filter((x) => x !== n).map((x) => x.p2p!.nodeId).sort());

    hub.resetStats();
    await Promise.all(nodes.map((n) => n.pull(reqs)));

    for (const n of nodes) for (const f of big) expect(await sha256File(n.store.blobPath(f.sha256))).toBe(f.sha256);
    const origin = hub.bytesSent();
    expect(origin).toBeGreaterThanOrEqual(copyBytes);
    // DESIGN.md's goal is <= 1.05 origin copies; this bound is looser on purpose. The files here
    // are small (6-24 MiB) in 1 MiB chunks, so one chunk fetched twice (two nodes deciding in the same
    // instant, before either sees the other's claim) is already 4-17 % of a copy, and two cores
    // running every node make such races common. The goal is measured with real model sizes in
    // bench/p2p.mjs (docs/benchmarks.md, P2P); here the bound catches a swarm that stopped sharing.
    expect(origin).toBeLessThanOrEqual(1.3 * copyBytes);
    // The rest came from peers, and what was served equals what was received.
    const fromPeers = nodes.reduce((n, x) => n + x.bytesFromPeers(), 0);
    const served = nodes.reduce((n, x) => n + x.p2p!.counters.bytesServed, 0);
    expect(fromPeers).toBeGreaterThanOrEqual(3 * copyBytes - origin - 3 * big.length);
    expect(served).toBeGreaterThanOrEqual(fromPeers);

    // Peers were only ever asked with the peer token, never the hub's.
    const peerRequests = nodes.flatMap((n) => n.seen);
    expect(peerRequests.length).toBeGreaterThan(0);
    for (const r of peerRequests) {
      expect(r.authorization).toBe(`Bearer ${TOKEN}`);
      expect(JSON.stringify(r.headers)).not.toContain(HUB_TOKEN);
      expect(r.url.startsWith('/v1/peer/')).toBe(true);
    }
  });

  it('a node that starts later takes what the others already have', async () => {
    hub = await startFakeHub({ perConnectionRate: 8 * MiB });
    const weights = makeContent(12 * MiB, 11);
    const repo = await hub.addRepo({ id: 'org/late', files: { 'model.safetensors': weights } });
    const f = repo.files[0]!;
    nodes = await startSwarm(3, { token: TOKEN, connections: 4, chunkSize: MiB });
    const req = [blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, f)];
    hub.resetStats();
    await nodes[0]!.pull(req);
    const first = hub.bytesSent();
    expect(first).toBeGreaterThanOrEqual(f.size);
    await Promise.all([nodes[1]!.pull(req), nodes[2]!.pull(req)]);
    const later = hub.bytesSent() - first;
    // Everything came from the first node.
    expect(later).toBe(0);
    for (const n of nodes.slice(1)) expect(await sha256File(n.store.blobPath(f.sha256))).toBe(f.sha256);
  });
});

describe('a peer that says it fetches but never delivers', () => {
  it('costs a bounded wait, then the origin serves its pieces', async () => {
    hub = await startFakeHub();
    const repo = await hub.addRepo({ id: 'org/slow', files: { 'model.safetensors': makeContent(8 * MiB, 51) } });
    const f = repo.files[0]!;
    nodes = await startSwarm(2, { token: TOKEN, connections: 4, chunkSize: MiB, tuning: { maxWaitMs: 1_000, pollMs: 300 } });
    const [stuck, a] = nodes as [SwarmNode, SwarmNode];
    // The stuck node claims the blob (as a node whose pull hangs would) and owns about half of it.
    const keep = setInterval(() => stuck.p2p!.inventory.touchFetching(f.sha256, f.size), 200);
    stuck.p2p!.inventory.touchFetching(f.sha256, f.size);
    try {
      hub.resetStats();
      await a.pull([blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, f)]);
    } finally {
      clearInterval(keep);
    }
    expect(await sha256File(a.store.blobPath(f.sha256))).toBe(f.sha256);
    expect(a.p2p!.counters.peerTimeouts).toBeGreaterThan(0);
    expect(a.bytesFromPeers()).toBe(0);
    expect(hub.bytesSent()).toBeGreaterThanOrEqual(f.size);
    // It was asked (long-polled) for its pieces before the origin was.
    expect(stuck.seen.some((r) => r.url.includes('/data?wait='))).toBe(true);
  });
});
