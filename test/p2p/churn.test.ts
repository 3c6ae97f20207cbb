/**
 * Churn (issue 16 item 3): a peer that stalls in the middle of a body without closing the
 * connection. The others must not wait out the engine's 30 s stall timeout, and the bytes the
 * peer never sent come from the origin once (no second copy).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { makeContent } from '../transfer/helpers.js';
import { blobRequestFor, SwarmNode } from './harness.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-token-churn';

let hub: FakeHub | undefined;
let nodes: SwarmNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.map((n) => n.close()));
  nodes = [];
  await hub?.close();
  hub = undefined;
});

const sha = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');

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
