/**
 * A polite cluster (issue 16 item 4): a 429 with Retry-After that one node receives from the CDN
 * pauses the other nodes' requests to that host too. Real nodes (harness), each with its own
 * pause book as in separate processes, so the other node can only learn it through the peer API.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { makeContent } from '../transfer/helpers.js';
import { blobRequestFor, SwarmNode, sha256File as sha } from './harness.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-token-polite';

let hub: FakeHub | undefined;
let nodes: SwarmNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.map((n) => n.close()));
  nodes = [];
  await hub?.close();
  hub = undefined;
});

const cdnRequests = (h: FakeHub, path: string) => h.log.filter((e) => e.host === 'cdn' && e.path === path).length;

describe('a Retry-After one node receives', () => {
  it("holds the other nodes' requests to that host for as long", async () => {
    hub = await startFakeHub();
    const repo = await hub.addRepo({ id: 'org/polite', files: { 'a.safetensors': makeContent(2 * MiB, 5), 'b.safetensors': makeContent(2 * MiB, 6) } });
    const [fa, fb] = repo.files as [(typeof repo.files)[0], (typeof repo.files)[0]];
    const a = await SwarmNode.start({ token: TOKEN, connections: 2, chunkSize: MiB });
    const b = await SwarmNode.start({ token: TOKEN, connections: 2, chunkSize: MiB });
    nodes = [a, b];
    const urls = nodes.map((n) => n.url);
    await Promise.all(nodes.map((n) => n.join({ static: urls })));
    await Promise.all(nodes.map((n) => n.p2p!.discovery.refresh()));

    // The CDN refuses a's first request with 429 + Retry-After: 3.
    hub.fault({ kind: 'status', host: 'cdn', path: fa.path, status: 429, retryAfter: 3 });
    const aDone = a.pull([blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, fa)]);
    const cdn = new URL(hub.cdnOrigin).origin;
    // b hears of it from a (b never spoke to the CDN).
    const told = Date.now();
    for (let i = 0; i < 200 && b.p2p!.originBackoff.remaining(cdn) === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(b.p2p!.originBackoff.remaining(cdn)).toBeGreaterThan(1_000);
    expect(cdnRequests(hub, fb.path)).toBe(0);

    // b now pulls another file from the same CDN: its bytes wait for the pause to end.
    const bDone = b.pull([blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, fb)]);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(Date.now() - told).toBeLessThan(2_500);
    expect(cdnRequests(hub, fb.path)).toBe(0);
    await Promise.all([aDone, bDone]);
    expect(await sha(a.store.blobPath(fa.sha256))).toBe(fa.sha256);
    expect(await sha(b.store.blobPath(fb.sha256))).toBe(fb.sha256);
    expect(cdnRequests(hub, fb.path)).toBeGreaterThan(0);
    // Only a was refused, once.
    expect(hub.log.filter((e) => e.status === 429)).toHaveLength(1);
  }, 60_000);

  it('a peer cannot impose a pause on anything but an http(s) origin, nor longer than 10 minutes', async () => {
    const a = await SwarmNode.start({ token: TOKEN });
    nodes = [a];
    await a.join({ static: [a.url] });
    const post = (body: unknown, token = TOKEN) =>
      fetch(`${a.url}/v1/peer/backoff`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect((await post({ origin: 'https://hub.example', waitMs: 1000 }, 'wrong')).status).toBe(401);
    expect((await post({ origin: 'file:///etc', waitMs: 1000 })).status).toBe(400);
    expect((await post({ origin: 'https://hub.example/path', waitMs: 1000 })).status).toBe(400);
    expect((await post({ origin: 'https://hub.example', waitMs: -5 })).status).toBe(400);
    expect(a.p2p!.originBackoff.remaining('https://hub.example')).toBe(0);
    expect((await post({ origin: 'https://hub.example', waitMs: 1e12 })).status).toBe(204);
    const left = a.p2p!.originBackoff.remaining('https://hub.example');
    expect(left).toBeGreaterThan(9 * 60_000);
    expect(left).toBeLessThanOrEqual(10 * 60_000);
  });
});
