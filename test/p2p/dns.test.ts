import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { createServer } from 'node:net';
import { inCI } from '../support/ci.js';
import { makeContent } from '../transfer/helpers.js';
import { startDnsResponder, type DnsResponder } from './dns-responder.js';
import { blobRequestFor, SwarmNode } from './harness.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-token-dns';
const SERVICE = 'swift-fetch-peers.swift-fetch.svc.cluster.local';

let hub: FakeHub | undefined;
let dns: DnsResponder | undefined;
let nodes: SwarmNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.map((n) => n.close()));
  nodes = [];
  await hub?.close();
  await dns?.close();
  hub = undefined;
  dns = undefined;
});

/** Three nodes on one port behind a Service (the first with `firstOpts`, the others on 127.0.0.2-3), joined by DNS. */
async function serviceSwarm(firstOpts: { host: string; alsoListen?: string[] }, records: string[], discoveryIntervalMs: number) {
  const responder = await startDnsResponder();
  dns = responder;
  const first = await SwarmNode.start({ token: TOKEN, ...firstOpts });
  const port = first.port;
  const second = await SwarmNode.start({ token: TOKEN, host: '127.0.0.2', port });
  const third = await SwarmNode.start({ token: TOKEN, host: '127.0.0.3', port });
  nodes = [first, second, third];
  responder.records.set(SERVICE, records);
  const join = { dns: SERVICE, port, dnsServers: [responder.server], discoveryIntervalMs };
  await Promise.all(nodes.map((n) => n.join(join)));
  await Promise.all(nodes.map((n) => n.p2p!.discovery.refresh()));
  return { dns: responder, first, second, third, port, join };
}

/** `holder` pulls a blob from the origin, then `taker` pulls it: all of it from `holder`, verified. */
async function pullThroughPeer(holder: SwarmNode, taker: SwarmNode, size: number): Promise<void> {
  hub = await startFakeHub();
  const repo = await hub.addRepo({ id: 'org/dns', files: { 'model.safetensors': makeContent(size, 41) } });
  const f = repo.files[0]!;
  const req = [blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, f)];
  await holder.pull(req);
  hub.resetStats();
  await taker.pull(req);
  expect(hub.bytesSent()).toBe(0);
  expect(taker.p2p!.source.bytesByPeer.get(holder.p2p!.nodeId)).toBe(f.size);
  expect(createHash('sha256').update(await readFile(taker.store.blobPath(f.sha256))).digest('hex')).toBe(f.sha256);
}

const ids = (n: SwarmNode) => n.p2p!.discovery.live().map((p) => p.id).sort();

describe('discovery through a headless Service', () => {
  it('finds the peers in the A records, never itself, and follows nodes joining and leaving', async () => {
    const { dns, first, second, port, join } = await serviceSwarm({ host: '127.0.0.1' }, ['127.0.0.1', '127.0.0.2', '127.0.0.3'], 200);

    for (const n of nodes) expect(ids(n)).toEqual(nodes.filter((x) => x !== n).map((x) => x.p2p!.nodeId).sort());
    for (const n of nodes) expect(n.p2p!.discovery.live().every((p) => new URL(p.url).port === String(port))).toBe(true);

    // The swarm works through what DNS found.
    await pullThroughPeer(first, second, 6 * MiB);

    // A node leaves the Service and another joins: the periodic re-resolution follows.
    const fourth = await SwarmNode.start({ token: TOKEN, host: '127.0.0.4', port });
    nodes.push(fourth);
    await fourth.join(join);
    const asked = dns.queries.length;
    dns.records.set(SERVICE, ['127.0.0.1', '127.0.0.2', '127.0.0.4']);
    const want = [second, fourth].map((x) => x.p2p!.nodeId).sort();
    await until(() => JSON.stringify(ids(first)) === JSON.stringify(want));
    expect(dns.queries.length).toBeGreaterThan(asked);
    expect(dns.queries.every((q) => q === SERVICE)).toBe(true);

    // Unknown name (no ready endpoints yet): no peers, no crash; known peers are kept meanwhile.
    dns.records.delete(SERVICE);
    await first.p2p!.discovery.refresh();
    expect(ids(first)).toEqual(want);
  });
});

/** Whether this host has IPv6 loopback (containers without IPv6 do not). */
async function noIpv6(): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', (e: NodeJS.ErrnoException) => resolve(`no IPv6 loopback here (${e.code ?? e.message})`));
    s.listen(0, '::1', () => s.close(() => resolve(undefined)));
  });
}
const v6Missing = await noIpv6();
if (v6Missing && inCI) throw new Error(`the IPv6 discovery test cannot run in CI: ${v6Missing}`);

describe.skipIf(v6Missing !== undefined)(`discovery through an IPv6 or dual-stack Service${v6Missing ? ` (skipped: ${v6Missing})` : ''}`, () => {
  it('uses AAAA records, addresses peers as http://[v6]:port, and counts a dual-stack node once', async () => {
    // The host has one IPv6 loopback address, so one node is reached over IPv6 and the others over
    // IPv4, all on one port as behind a Service. The first also listens on 127.0.0.1: a dual-stack pod.
    const { dns, first, second, third, port } = await serviceSwarm({ host: '::1', alsoListen: ['127.0.0.1'] }, ['::1', '127.0.0.2', '127.0.0.3'], 60_000);

    expect(new Set(dns.types)).toEqual(new Set(['A', 'AAAA']));
    for (const n of nodes) expect(ids(n)).toEqual(nodes.filter((x) => x !== n).map((x) => x.p2p!.nodeId).sort());
    const v6 = `http://[::1]:${port}`;
    for (const n of [second, third]) expect(n.p2p!.discovery.get(first.p2p!.nodeId)?.url).toBe(v6);

    // Bytes flow over IPv6: the v6 node is the only holder, the second takes everything from it.
    await pullThroughPeer(first, second, 4 * MiB);

    // Dual-stack: the Service now has an A and an AAAA record for the first node. Every node still
    // counts three members (itself included), and the address that worked first keeps the node.
    dns.records.set(SERVICE, ['::1', '127.0.0.1', '127.0.0.2', '127.0.0.3']);
    await Promise.all(nodes.map((n) => n.p2p!.discovery.refresh()));
    for (const n of nodes) expect(ids(n)).toEqual(nodes.filter((x) => x !== n).map((x) => x.p2p!.nodeId).sort());
    for (const n of [second, third]) expect(n.p2p!.discovery.get(first.p2p!.nodeId)?.url).toBe(v6);
    // And the first node knows both its own addresses for itself: it never lists itself.
    expect(first.p2p!.discovery.all().map((p) => p.id)).not.toContain(first.p2p!.nodeId);
  });
});

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}
