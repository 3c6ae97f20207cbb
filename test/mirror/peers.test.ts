/**
 * Mirror misses on two daemons that are peers: each node's client pulls through its own node, the
 * engines share chunks, and the origin sends about one copy.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { noise } from '../interop/fixtures.js';
import { freePort, tmpDir } from '../support/index.js';
import { startMirrorNode, type MirrorNode } from './harness.js';

const MiB = 1024 * 1024;

let hub: FakeHub | undefined;
const nodes: MirrorNode[] = [];
afterAll(async () => {
  for (const n of nodes) await n.stop();
  await hub?.close();
});

describe('mirror with peers', () => {
  it('two nodes, a cold client on each at once: both get the right bytes, the origin sends about one copy', async () => {
    hub = await startFakeHub({ perConnectionRate: 4 * MiB });
    const weights = noise(24 * MiB, 'peers');
    await hub.addRepo({ id: 'org/shared', files: { 'model.safetensors': weights, 'config.json': '{}' } });
    const dir = await tmpDir();
    await writeFile(join(dir, 'peer-token'), 'mirror-peer-token\n');
    const ports = [await freePort(), await freePort()];
    const peers = `peers:\n  static: [${ports.map((p) => `http://127.0.0.1:${p}`).join(', ')}]\n  tokenFile: ${join(dir, 'peer-token')}\n`;
    for (const port of ports) {
      nodes.push(await startMirrorNode(hub, { port, yaml: `mirror: true\nconnections: 4\nchunkSize: 1MiB\n${peers}`, deps: { p2p: { discoveryIntervalMs: 200 } } }));
    }
    // Let each node see the other before the clients come.
    await new Promise((r) => setTimeout(r, 600));
    const bodies = await Promise.all(
      nodes.map(async (n) => Buffer.from(await (await fetch(`${n.hfEndpoint}/org/shared/resolve/main/model.safetensors`)).arrayBuffer())),
    );
    for (const b of bodies) expect(b.equals(weights)).toBe(true);
    const origin = hub.bytesSent({ path: 'model.safetensors' });
    expect(origin).toBeGreaterThanOrEqual(weights.length);
    expect(origin).toBeLessThanOrEqual(1.3 * weights.length);
    const fromPeers = await Promise.all(
      nodes.map(async (n) => Number(/^swift_fetch_bytes_received_total\{source="peer"\} (\S+)$/m.exec(await (await fetch(`${n.daemon.url}/metrics`)).text())?.[1] ?? NaN)),
    );
    expect(fromPeers.reduce((a, b) => a + b, 0)).toBeGreaterThan(0.5 * weights.length);
  }, 120_000);
});
