import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
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

const ids = (n: SwarmNode) => n.p2p!.discovery.live().map((p) => p.id).sort();

describe('discovery through a headless Service', () => {
  it('finds the peers in the A records, never itself, and follows nodes joining and leaving', async () => {
    dns = await startDnsResponder();
    const first = await SwarmNode.start({ token: TOKEN, host: '127.0.0.1' });
    const port = first.port;
    const second = await SwarmNode.start({ token: TOKEN, host: '127.0.0.2', port });
    const third = await SwarmNode.start({ token: TOKEN, host: '127.0.0.3', port });
    nodes = [first, second, third];
    dns.records.set(SERVICE, ['127.0.0.1', '127.0.0.2', '127.0.0.3']);
    const join = { dns: SERVICE, port, dnsServers: [dns.server], discoveryIntervalMs: 200 };
    await Promise.all(nodes.map((n) => n.join(join)));
    await Promise.all(nodes.map((n) => n.p2p!.discovery.refresh()));

    for (const n of nodes) expect(ids(n)).toEqual(nodes.filter((x) => x !== n).map((x) => x.p2p!.nodeId).sort());
    for (const n of nodes) expect(n.p2p!.discovery.live().every((p) => new URL(p.url).port === String(port))).toBe(true);

    // The swarm works through what DNS found.
    hub = await startFakeHub();
    const repo = await hub.addRepo({ id: 'org/dns', files: { 'model.safetensors': makeContent(6 * MiB, 41) } });
    const f = repo.files[0]!;
    const req = [blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, f)];
    await first.pull(req);
    hub.resetStats();
    await second.pull(req);
    expect(hub.bytesSent()).toBe(0);
    expect(createHash('sha256').update(await readFile(second.store.blobPath(f.sha256))).digest('hex')).toBe(f.sha256);

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

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}
