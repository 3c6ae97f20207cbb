import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { makeContent } from '../transfer/helpers.js';
import { blobRequestFor, SwarmNode } from './harness.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-token-poison';

let hub: FakeHub | undefined;
let nodes: SwarmNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.map((n) => n.close()));
  nodes = [];
  await hub?.close();
  hub = undefined;
});

const sha = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');

/** Flips the first byte of everything it sends: honest about what it has, not about the bytes. */
const flip = (b: Buffer) => {
  const out = Buffer.from(b);
  if (out.length > 0) out[0]! ^= 0xff;
  return out;
};

describe('a peer serving bad bytes', () => {
  it('is detected, quarantined, and the result is still the verified file', async () => {
    hub = await startFakeHub();
    const repo = await hub.addRepo({ id: 'org/poison', files: { 'model.safetensors': makeContent(10 * MiB + 3, 21) } });
    const f = repo.files[0]!;
    const req = [blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, f)];
    const opts = { token: TOKEN, connections: 4, chunkSize: MiB };
    const liar = await SwarmNode.start({ ...opts, poison: flip });
    const a = await SwarmNode.start(opts);
    const b = await SwarmNode.start(opts);
    nodes = [liar, a, b];
    const urls = nodes.map((n) => n.url);
    await Promise.all(nodes.map((n) => n.join({ static: urls })));
    await Promise.all(nodes.map((n) => n.p2p!.discovery.refresh()));

    // The liar downloads honestly; from then on it is the only holder.
    await liar.pull(req);
    hub.resetStats();
    await a.pull(req);
    expect(await sha(a.store.blobPath(f.sha256))).toBe(f.sha256);
    // A took bytes from the liar, failed the whole-file hash, refetched from the origin only.
    expect(a.p2p!.source.bytesByPeer.get(liar.p2p!.nodeId)).toBeGreaterThan(0);
    expect(a.events.some((e) => e.type === 'hash-mismatch')).toBe(true);
    expect(hub.bytesSent()).toBeGreaterThanOrEqual(f.size);
    await waitFor(() => a.p2p!.discovery.isQuarantined(liar.p2p!.nodeId));
    expect(a.p2p!.counters.quarantines).toBe(1);
    expect(a.p2p!.discovery.live().map((p) => p.id)).toEqual([b.p2p!.nodeId]);

    // B sees two finished holders: the liar and A. Whatever it takes from the liar is caught the same way.
    await b.pull(req);
    expect(await sha(b.store.blobPath(f.sha256))).toBe(f.sha256);
    const fromLiar = b.p2p!.source.bytesByPeer.get(liar.p2p!.nodeId) ?? 0;
    if (fromLiar > 0) await waitFor(() => b.p2p!.discovery.isQuarantined(liar.p2p!.nodeId));
    expect(b.p2p!.discovery.isQuarantined(a.p2p!.nodeId)).toBe(false);

    // Once quarantined, the liar is never asked for data again.
    const asked = liar.seen.length;
    hub.resetStats();
    const c = await SwarmNode.start(opts);
    nodes.push(c);
    await c.join({ static: urls });
    c.p2p!.discovery.quarantine(liar.p2p!.nodeId, 'test');
    await c.pull(req);
    expect(liar.seen.slice(asked).filter((r) => r.url.includes('/data')).length).toBe(0);
    expect(hub.bytesSent()).toBe(0);
  });
});

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
