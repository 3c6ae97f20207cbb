/**
 * Churn (issue 16 item 3): a peer that stalls in the middle of a body without closing the
 * connection, and a node SIGKILLed mid-swarm and restarted on the same disk. The others must not
 * wait out long timeouts (the engine's 30 s stall, the source's 20 s wait for an owner), and the
 * origin sends about one copy, not a second. A peer partitioned away: partition.test.ts (netns).
 */
import { rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { makeContent } from '../transfer/helpers.js';
import { spawnNodeChild, swarmWithChild, type NodeChild } from './child.js';
import { blobRequestFor, SwarmNode, sha256File as sha } from './harness.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-token-churn';

let hub: FakeHub | undefined;
let nodes: SwarmNode[] = [];
let children: NodeChild[] = [];
let childDir: string | undefined;
afterEach(async () => {
  await Promise.all(children.map((c) => c.kill()));
  children = [];
  // A SIGKILLed node cannot clean up after itself.
  if (childDir) await rm(childDir, { recursive: true, force: true });
  childDir = undefined;
  await Promise.all(nodes.map((n) => n.close()));
  nodes = [];
  await hub?.close();
  hub = undefined;
});


describe('a peer that stalls without closing', () => {
  it('is abandoned after a short silence; the rest comes from the origin, once', async () => {
    hub = await startFakeHub();
    const repo = await hub.addRepo({ id: 'org/stall', files: { 'model.safetensors': makeContent(12 * MiB, 77) } });
    const f = repo.files[0]!;
    const req = [blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, f)];
    // The stalling node holds the whole blob and says so, but every body it serves stops after 64 KiB.
    const stalling = await SwarmNode.start({ token: TOKEN, connections: 4, chunkSize: MiB, stallAfterBytes: 64 * 1024 });
    const a = await SwarmNode.start({ token: TOKEN, connections: 4, chunkSize: MiB, stallTimeoutMs: 30_000 });
    nodes = [stalling, a];
    const urls = nodes.map((n) => n.url);
    await Promise.all(nodes.map((n) => n.join({ static: urls })));
    await stalling.pull(req);
    await a.p2p!.discovery.refresh();
    expect(a.p2p!.discovery.live().map((p) => p.id)).toContain(stalling.p2p!.nodeId);

    hub.resetStats();
    const t0 = Date.now();
    await a.pull(req);
    const took = Date.now() - t0;
    expect(await sha(a.store.blobPath(f.sha256))).toBe(f.sha256);
    // It asked the stalling holder, got its first bytes, then gave up on it.
    expect(stalling.seen.some((r) => r.url.includes('/data'))).toBe(true);
    expect(a.bytesFromPeers()).toBeGreaterThan(0);
    expect(a.p2p!.counters.peerErrors).toBeGreaterThan(0);
    // What the peer did not send came from the origin: at most one copy in all, not a second.
    expect(hub.bytesSent() + a.bytesFromPeers()).toBeGreaterThanOrEqual(f.size);
    expect(hub.bytesSent()).toBeLessThanOrEqual(f.size);
    // Not one 30 s engine stall timeout waited out (5 s of silence ends a peer body).
    expect(took).toBeLessThan(25_000);
  }, 90_000);
});

describe('a node SIGKILLed mid-swarm and restarted on the same disk', () => {
  it('the others finish without waiting out timeouts; the restarted node resumes; about one origin copy', async () => {
    hub = await startFakeHub({ perConnectionRate: 4 * MiB });
    const repo = await hub.addRepo({ id: 'org/restart', files: { 'model.safetensors': makeContent(96 * MiB, 79) } });
    const f = repo.files[0]!;
    const req = [blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, f)];
    // Small chunks: what the killed node had in flight (lost with it) is a small part of a copy.
    const opts = { token: TOKEN, connections: 4, chunkSize: MiB / 2 };

    const swarm = await swarmWithChild(opts, (child, dir) => {
      children.push(child);
      childDir = dir;
    });
    const { a, b, childUrl, urls } = swarm;
    let c = swarm.child;
    const firstId = swarm.childId;
    nodes = [a, b];

    hub.resetStats();
    const t0 = Date.now();
    // Each step is bounded, so a hang names where it stuck (once, in CI, this test ran out its
    // whole 90 s with no sign of which step; it did not recur in 8 runs under full CPU load).
    const step = <T>(what: string, p: Promise<T>, ms: number): Promise<T> => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`stuck ${ms / 1000} s at: ${what} (${Date.now() - t0} ms in); the child's last lines: ${JSON.stringify(c.messages.slice(-3))}`)), ms);
      });
      return Promise.race([p, late]).finally(() => clearTimeout(timer));
    };
    c.send({ go: req });
    const pulls = Promise.all(nodes.map((n) => n.pull(req)));
    // Kill it once it holds a few chunks of its own, then bring it back on the same disk and port,
    // as a daemon restarted by its supervisor (a new node id: a restart is a new member).
    await step('the child holding 4 chunks', c.next((m) => typeof m.chunk === 'number' && m.chunk >= 4), 20_000);
    await step('the SIGKILLed child closing its pipes', c.kill(), 10_000);
    // Its chunks died with it until it is back: the others may have needed some meanwhile.
    const heldAtKill = Math.max(...c.messages.map((m) => (typeof m.chunk === 'number' ? m.chunk : 0))) * opts.chunkSize;
    const port = Number(new URL(childUrl).port);
    c = spawnNodeChild({ ...opts, dir: childDir!, port });
    children.push(c);
    expect((await step('the restarted child listening', c.next((m) => typeof m.url === 'string'), 20_000)).url).toBe(childUrl);
    c.send({ static: urls });
    const secondId = (await step('the restarted child joining', c.next((m) => typeof m.joined === 'string'), 10_000)).joined as string;
    expect(secondId).not.toBe(firstId);
    c.send({ go: req });
    await step('the two survivors finishing', pulls, 30_000);
    const survivorsMs = Date.now() - t0;
    const restarted = await step('the restarted child finishing', c.next((m) => m.done === true), 30_000);

    for (const n of nodes) expect(await sha(n.store.blobPath(f.sha256))).toBe(f.sha256);
    expect(restarted.hashes).toEqual([f.sha256]);
    // The restarted node kept what it had made durable before the kill.
    expect(restarted.resumedBytes as number).toBeGreaterThan(0);
    // No wait for an owner ran out (20 s each), and the survivors were done well before the
    // engine's 30 s stall timeout could have mattered (one copy at the hub's pace takes ~3 s).
    for (const n of nodes) expect(n.p2p!.counters.peerTimeouts).toBe(0);
    expect(survivorsMs).toBeLessThan(20_000);
    // One copy, not a second: at most what died with the node (what it held when killed, and one
    // chunk per connection in flight) comes from the origin again; about 5 % of a copy here (it is
    // killed after 4 of 192 chunks; a loaded machine lets a few more land before the kill does).
    expect(hub.bytesSent()).toBeGreaterThanOrEqual(f.size);
    expect(hub.bytesSent()).toBeLessThanOrEqual(f.size + heldAtKill + opts.connections * opts.chunkSize);
    expect(hub.bytesSent()).toBeLessThanOrEqual(1.1 * f.size);
  }, 150_000);
});
