import { rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { makeContent } from '../transfer/helpers.js';
import { swarmWithChild, type NodeChild } from './child.js';
import { blobRequestFor, SwarmNode, sha256File as sha } from './harness.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-token-kill';

let hub: FakeHub | undefined;
let nodes: SwarmNode[] = [];
let child: NodeChild | undefined;
let childDir: string | undefined;
afterEach(async () => {
  await child?.kill();
  child = undefined;
  // A SIGKILLed node cannot clean up after itself.
  if (childDir) await rm(childDir, { recursive: true, force: true });
  childDir = undefined;
  await Promise.all(nodes.map((n) => n.close()));
  nodes = [];
  await hub?.close();
  hub = undefined;
});


describe('a peer killed mid-transfer', () => {
  it('does not stall the others: they finish with verified blobs', async () => {
    hub = await startFakeHub({ perConnectionRate: 2 * MiB });
    const repo = await hub.addRepo({ id: 'org/kill', files: { 'model.safetensors': makeContent(24 * MiB, 31) } });
    const f = repo.files[0]!;
    const req = [blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, f)];
    const opts = { token: TOKEN, connections: 4, chunkSize: MiB, tuning: { maxWaitMs: 8_000 } };

    const swarm = await swarmWithChild(opts, (c, dir) => {
      child = c;
      childDir = dir;
    });
    const { a, b, childId } = swarm;
    const { next, messages } = swarm.child;
    nodes = [a, b];
    for (const n of nodes) expect(n.p2p!.discovery.live().map((p) => p.id)).toContain(childId);

    hub.resetStats();
    swarm.child.send({ go: req });
    const pulls = Promise.all(nodes.map((n) => n.pull(req)));
    // Kill it once it holds a few chunks (it owns about a third of them).
    await next((m) => typeof m.chunk === 'number' && m.chunk >= 3);
    await swarm.child.kill();
    await pulls;

    for (const n of nodes) expect(await sha(n.store.blobPath(f.sha256))).toBe(f.sha256);
    for (const n of nodes) expect(n.p2p!.discovery.live().map((p) => p.id)).not.toContain(childId);
    expect(messages.some((m) => m.done)).toBe(false);
    // The survivors still shared: the origin sent less than two copies for the three nodes. Looser
    // than DESIGN.md's 1.05 copies because a node dies mid-pull here: the pieces it owned and had
    // fetched are gone with it and come from the origin again, and the survivors first wait for it
    // (bounded) before they do. The 1.05 goal is for nodes that all finish (bench/p2p.mjs).
    expect(hub.bytesSent()).toBeLessThan(2 * f.size);
  });
});
