/**
 * A swarm node in its own process, so a test can SIGKILL it mid-transfer. Line protocol:
 * stdout `{"url"}` once listening; stdin `{"static": [...], "requests": [...]}` joins and pulls,
 * stdout `{"joined": nodeId}`, then `{"chunk": n}` per durable chunk and `{"done": true, hashes}`
 * (SHA-256 of the stored blobs, re-read from disk), with what came from the origin and the peers,
 * the bytes it resumed from its own disk and its peer wait timeouts; `{"exit": true}` cleans up and
 * exits. Options: `dir` (reuse a store and state dir: a restart on the same disk), `host`, `port`.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { BlobRequest } from '../../src/core/transfer.js';
import { SwarmNode } from './harness.js';

const opts = JSON.parse(process.argv[2] ?? '{}') as { token: string; connections?: number; chunkSize?: number; host?: string; port?: number; dir?: string };
const node = await SwarmNode.start(opts);
const say = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');
say({ url: node.url, dir: node.dir });
const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const msg = JSON.parse(line) as { static?: string[]; go?: BlobRequest[]; exit?: boolean };
  if (msg.exit) {
    await node.close();
    process.exit(0);
  }
  if (msg.static) {
    await node.join({ static: msg.static });
    say({ joined: node.p2p!.nodeId });
  } else if (msg.static === undefined && msg.go) {
    await node.p2p!.discovery.refresh();
    let chunks = 0;
    node.p2p!.inventory.noteChunk = ((orig) => (e) => {
      orig(e);
      say({ chunk: ++chunks });
    })(node.p2p!.inventory.noteChunk.bind(node.p2p!.inventory));
    const t0 = Date.now();
    const fetched = await node.pull(msg.go);
    const hashes: string[] = [];
    for (const b of fetched) hashes.push(createHash('sha256').update(await readFile(node.store.blobPath(b.sha256))).digest('hex'));
    let originBytes = 0;
    let resumedBytes = 0;
    for (const e of node.events) {
      if (e.type === 'progress' && e.source === 'origin') originBytes += e.bytes;
      if (e.type === 'blob-start') resumedBytes += e.resumedBytes;
    }
    say({ done: true, ms: Date.now() - t0, hashes, bytesFromPeers: node.bytesFromPeers(), originBytes, resumedBytes, peerTimeouts: node.p2p!.counters.peerTimeouts });
  }
}
