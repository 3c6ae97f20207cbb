/**
 * The swarm across real network namespaces with `tc` link caps: each node is a child process in
 * its own namespace, attached by a veth pair to a bridge where the fake hub listens. Needs root
 * and iproute2; without them the test is skipped with the reason, and in CI it fails.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { inCI } from '../support/ci.js';
import { makeContent } from '../transfer/helpers.js';
import { blobRequestFor } from './harness.js';
import { missingNetns, NetnsLab } from './netns-lab.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-token-netns';

const why = missingNetns();
if (why && inCI) throw new Error(`netns test cannot run in CI: ${why}`);

const lab = new NetnsLab(1);
let hub: FakeHub | undefined;
afterAll(async () => {
  await hub?.close();
  await lab.cleanup();
});

describe.skipIf(why !== undefined)(`swarm across network namespaces${why ? ` (skipped: ${why})` : ''}`, () => {
  it('three capped nodes started at once end verified with about one origin copy', async () => {
    const addrs = lab.setUp(3, '200mbit');
    hub = await startFakeHub({ host: `${lab.subnet}.1`, cdnHost: `${lab.subnet}.1` });
    const repo = await hub.addRepo({ id: 'org/netns', files: { 'model.safetensors': makeContent(16 * MiB, 61) } });
    const f = repo.files[0]!;
    const nodes = addrs.map((a, i) => lab.node(i, { token: TOKEN, connections: 4, chunkSize: MiB, host: a }));
    const hellos = await Promise.all(nodes.map((n) => n.next((m) => typeof m.url === 'string')));
    const urls = hellos.map((m) => m.url as string);
    for (const n of nodes) n.send({ static: urls });
    await Promise.all(nodes.map((n) => n.next((m) => typeof m.joined === 'string')));
    hub.resetStats();
    for (const n of nodes) n.send({ go: [blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, f)] });
    const done = await Promise.all(nodes.map((n) => n.next((m) => m.done === true)));
    for (const d of done) expect(d.hashes).toEqual([f.sha256]);
    expect(hub.bytesSent()).toBeGreaterThanOrEqual(f.size);
    // DESIGN.md's goal is <= 1.05 origin copies; this bound is looser on purpose. The files here
    // are small (6-24 MiB) in 1 MiB chunks, so one chunk fetched twice (two nodes deciding in the same
    // instant, before either sees the other's claim) is already 4-17 % of a copy, and two cores
    // running every node make such races common. The goal is measured with real model sizes in
    // bench/p2p.mjs (docs/benchmarks.md, P2P); here the bound catches a swarm that stopped sharing.
    expect(hub.bytesSent()).toBeLessThanOrEqual(1.3 * f.size);
    expect(done.reduce((n, d) => n + (d.bytesFromPeers as number), 0)).toBeGreaterThan(f.size);
    for (const n of nodes) n.send({ exit: true });
  });
});
