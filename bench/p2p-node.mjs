#!/usr/bin/env node
/**
 * One swarm node for bench/p2p.mjs, in its own process: the daemon's router with the peer routes,
 * its own store and state dir, the real engine fed by the peer chunk source, and a download cap
 * (the node's link). Line protocol on stdio:
 *   out {"url"} -> in {"static": [...]} -> out {"joined"} -> in {"go": [BlobRequest]} -> out {"done", ...}
 * or, started and asked at once: in {"static": [...], "go": [...]} -> out {"joined"}, {"done", ...}
 */
import { createServer } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Router } from '../dist/daemon/router.js';
import { createP2PNode, PeerToken } from '../dist/p2p/index.js';
import { Store } from '../dist/store/store.js';
import { fetchBlobs, RateLimiter } from '../dist/transfer/index.js';

const o = JSON.parse(process.argv[2] ?? '{}');
const dir = await mkdtemp(join(tmpdir(), 'sf-p2p-bench-'));
const store = new Store(join(dir, 'store'));
await store.init();
const router = new Router();
let p2p;
const server = createServer((req, res) => (p2p ? void router.handle(req, res) : res.writeHead(503).end()));
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const say = (m) => process.stdout.write(JSON.stringify(m) + '\n');
say({ url: `http://127.0.0.1:${server.address().port}` });

const cleanup = async () => {
  await p2p?.stop();
  server.closeAllConnections();
  server.close();
  await rm(dir, { recursive: true, force: true });
};

async function pull(requests) {
  const t0 = performance.now();
  let origin = 0;
  const hooks = p2p.engineHooks({ onEvent: (e) => e.type === 'progress' && e.source === 'origin' && (origin += e.bytes) });
  const fetched = await fetchBlobs(requests, {
    partialDir: store.partialDir,
    stateDir: join(dir, 'state'),
    connections: o.connections ?? 8,
    ...(o.chunkSize ? { chunkSize: o.chunkSize } : {}),
    ...(o.maxRate ? { limiter: new RateLimiter(o.maxRate) } : {}),
    hashWorkers: 1,
    ...(o.sourceWaiters !== undefined ? { sourceWaiters: o.sourceWaiters } : {}),
    ...hooks,
  });
  for (const b of fetched) await store.commitBlob(b.path, b.sha256);
  say({ done: true, ms: performance.now() - t0, ...p2p.counters.snapshot(), originProgress: origin });
}

for await (const line of createInterface({ input: process.stdin })) {
  const msg = JSON.parse(line);
  if (msg.static) {
    p2p = createP2PNode({
      store,
      stateDir: join(dir, 'state'),
      token: PeerToken.fromValue(o.token),
      static: msg.static,
      discoveryIntervalMs: 2_000,
      uploadMaxRate: o.uploadMaxRate ?? 0,
      uploadConcurrency: o.uploadConcurrency ?? 8,
      ...(o.fanout !== undefined ? { tuning: { fanout: o.fanout } } : {}),
    });
    p2p.registerRoutes(router);
    await p2p.start();
    say({ joined: p2p.nodeId });
    // Asked for a model the moment it starts (--cold): no settling round before the pull.
    if (msg.go) await pull(msg.go);
  } else if (msg.refresh) {
    await p2p.discovery.refresh();
    say({ refreshed: p2p.discovery.live().length });
  } else if (msg.go) {
    await pull(msg.go);
  } else if (msg.exit) {
    await cleanup();
    process.exit(0);
  }
}
await cleanup();
