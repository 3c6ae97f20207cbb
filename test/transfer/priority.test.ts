/**
 * Priorities (issue 16 item 4): while an urgent transfer runs, background transfers in the same
 * process keep at most two origin requests open. Real engine, real fake hub with a per-connection
 * rate cap; what is measured is the bytes the CDN sent for the background file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchBlobs, PriorityGate } from '../../src/transfer/index.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { blobRequestFor } from '../p2p/harness.js';
import { makeContent, MiB, sha256, tempDir } from './helpers.js';
import { readFile } from 'node:fs/promises';

let hub: FakeHub;
beforeAll(async () => {
  hub = await startFakeHub({ perConnectionRate: MiB });
});
afterAll(async () => hub?.close());

describe('an urgent pull next to a background one', () => {
  it('gets the origin: the background pull drops to two connections until it ends', async () => {
    const repo = await hub.addRepo({ id: 'org/prio', files: { 'bg.safetensors': makeContent(40 * MiB, 3), 'urgent.safetensors': makeContent(32 * MiB, 4) } });
    const [bg, urgent] = repo.files as [(typeof repo.files)[0], (typeof repo.files)[0]];
    const gate = new PriorityGate(2);
    const { dir, cleanup } = tempDir();
    try {
      const common = { partialDir: `${dir}/partial`, connections: 8, chunkSize: MiB, priorityGate: gate, env: {} };
      const bgDone = fetchBlobs([blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, bg)], { ...common, stateDir: `${dir}/s1`, priority: 'background' });
      // Let the background pull open its 8 connections.
      await new Promise((r) => setTimeout(r, 1_500));
      const before = hub.bytesSent({ host: 'cdn', path: bg.path });
      expect(before).toBeGreaterThan(4 * MiB); // ~8 connections x 1 MiB/s
      const urgentDone = fetchBlobs([blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, urgent)], { ...common, stateDir: `${dir}/s2`, priority: 'urgent' });
      // Requests already open finish their span (1 MiB at 1 MiB/s); after that, two at most.
      await new Promise((r) => setTimeout(r, 1_500));
      const t0 = Date.now();
      const from = hub.bytesSent({ host: 'cdn', path: bg.path });
      const [u] = await urgentDone;
      const seconds = (Date.now() - t0) / 1000;
      const during = hub.bytesSent({ host: 'cdn', path: bg.path }) - from;
      expect(seconds).toBeGreaterThan(0.5);
      // Two connections at 1 MiB/s, with slack for timing; eight would be 8 MiB/s.
      expect(during / seconds).toBeLessThan(3.5 * MiB);
      const [b] = await bgDone;
      expect(sha256(await readFile(u!.path))).toBe(urgent.sha256);
      expect(sha256(await readFile(b!.path))).toBe(bg.sha256);
      expect(gate.backgroundInFlight).toBe(0);
    } finally {
      cleanup();
    }
  }, 120_000);
});
