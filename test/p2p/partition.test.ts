/**
 * Churn (issue 16 item 3): a peer partitioned away mid-swarm. Three nodes in their own network
 * namespaces pull one blob cold; once the third holds a few chunks its link goes down, so the others
 * get silence (dropped packets), not refusals. The two others must finish without waiting out the
 * long timeouts (the source's 20 s wait for an owner, the engine's 30 s stall) and between them take
 * about one copy from the origin. Needs root and iproute2 (skipped with the reason; fails in CI).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { inCI } from '../support/ci.js';
import { makeContent } from '../transfer/helpers.js';
import { blobRequestFor } from './harness.js';
import { missingNetns, NetnsLab } from './netns-lab.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-token-partition';

const why = missingNetns();
if (why && inCI) throw new Error(`the partition test cannot run in CI: ${why}`);

const lab = new NetnsLab(2);
let hub: FakeHub | undefined;
afterAll(async () => {
  await hub?.close();
  await lab.cleanup();
});

describe.skipIf(why !== undefined)(`a peer partitioned away${why ? ` (skipped: ${why})` : ''}`, () => {
  it('the others finish without long waits and take about one copy from the origin between them', async () => {
    const addrs = lab.setUp(3, '400mbit');
    hub = await startFakeHub({ host: `${lab.subnet}.1`, cdnHost: `${lab.subnet}.1`, perConnectionRate: 4 * MiB });
    const repo = await hub.addRepo({ id: 'org/partition', files: { 'model.safetensors': makeContent(48 * MiB, 83) } });
    const f = repo.files[0]!;
    const req = [blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, f)];
    const nodes = addrs.map((a, i) => lab.node(i, { token: TOKEN, connections: 4, chunkSize: MiB / 2, host: a }));
    const urls = (await Promise.all(nodes.map((n) => n.next((m) => typeof m.url === 'string')))).map((m) => m.url as string);
    for (const n of nodes) n.send({ static: urls });
    await Promise.all(nodes.map((n) => n.next((m) => typeof m.joined === 'string')));
    hub.resetStats();
    for (const n of nodes) n.send({ go: req });

    const [a, b, cut] = nodes as [(typeof nodes)[0], (typeof nodes)[0], (typeof nodes)[0]];
    await cut.next((m) => typeof m.chunk === 'number' && m.chunk >= 6);
    const cutAt = Date.now();
    lab.partition(2);
    const done = await Promise.all([a, b].map((n) => n.next((m) => m.done === true)));
    const afterCut = Date.now() - cutAt;

    for (const d of done) expect(d.hashes).toEqual([f.sha256]);
    // The cut node never finished: it lost the origin too.
    expect(cut.messages.some((m) => m.done === true)).toBe(false);
    // No wait for an owner ran out (20 s each): the silent peer was dropped on its first timeouts.
    for (const d of done) expect(d.peerTimeouts).toBe(0);
    expect(afterCut).toBeLessThan(25_000);
    // Between them the survivors took about one copy from the origin: the pieces the cut node had
    // fetched (and can no longer share) are fetched again once, by one of them, not by both. The
    // hub's own count (by client address) is the measure; what the nodes credit to the origin must
    // agree with it (they once credited peer bytes to the origin when both wrote in one batch).
    const survivors = new Set(addrs.slice(0, 2));
    const sentToSurvivors = hub.log.filter((e) => e.remoteAddress !== undefined && survivors.has(e.remoteAddress.replace(/^::ffff:/, ''))).reduce((n, e) => n + e.bodyBytes, 0);
    expect(sentToSurvivors).toBeLessThanOrEqual(1.05 * f.size);
    const survivorsOrigin = done.reduce((n, d) => n + (d.originBytes as number), 0);
    expect(survivorsOrigin).toBeGreaterThanOrEqual(f.size - done.reduce((n, d) => n + (d.bytesFromPeers as number), 0));
    expect(survivorsOrigin).toBeLessThanOrEqual(sentToSurvivors);
  }, 120_000);
});
