#!/usr/bin/env node
/**
 * P2P benchmark: N nodes (separate processes) pull one model cold at the same moment from a capped
 * origin; time until every node is ready and origin bytes, against one node pulling alone.
 *
 *   npm run build && TMPDIR=/dev/shm node bench/p2p.mjs [--nodes 2,4,8] [--size-mib 128]
 *       [--origin-total-mib 8] [--origin-conn-mib 4] [--link-mib 48] [--connections 8] [--chunk-mib 4]
 *       [--upload-concurrency 8] [--cold] [--fanout 3]
 *
 * --cold: each node is given its peers and the model in one message, as a daemon asked for a model
 * the moment it starts (its first discovery round finds only the peers already answering).
 *
 * Set P2P_BENCH_SAMPLES=1 to print the origin's MiB/s second by second.
 *
 * Caps: the origin has a per-connection cap (a CDN edge) and a total cap (the cluster's uplink,
 * shared by all nodes); every node has a download cap (engine rate limit) and the same upload cap
 * for serving peers (its link, full duplex). Results are printed as a Markdown table.
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { loadavg, startP2PNode } from './common.mjs';

const MiB = 1024 * 1024;
const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '2,4,8' },
    'size-mib': { type: 'string', default: '128' },
    'origin-total-mib': { type: 'string', default: '8' },
    'origin-conn-mib': { type: 'string', default: '4' },
    'link-mib': { type: 'string', default: '48' },
    connections: { type: 'string', default: '8' },
    'chunk-mib': { type: 'string', default: '4' },
    'upload-concurrency': { type: 'string', default: '8' },
    // Engine tasks that may wait on peers beyond --connections (default: the engine's, 4x); 0 = old behaviour.
    'source-waiters': { type: 'string' },
    // Trackers per blob (default: the source's, 3); 1000 = every node asks every peer (the old rule).
    fanout: { type: 'string' },
    // Ask every node for the model the moment it starts: no discovery round settles first.
    cold: { type: 'boolean', default: false },
  },
});
const sizes = (() => {
  const total = Number(values['size-mib']) * MiB;
  // A sharded model: two big shards, a smaller one, and a config.
  const a = Math.floor(total * 0.45);
  const b = Math.floor(total * 0.45);
  return [a, b, total - a - b - 2048, 2048];
})();
const files = sizes.map((n, i) => {
  const buf = Buffer.allocUnsafe(n);
  let x = (i + 1) * 2654435761 >>> 0;
  for (let k = 0; k + 4 <= n; k += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    buf.writeUInt32LE(x, k);
  }
  return { name: `model-${i}.bin`, buf, sha256: createHash('sha256').update(buf).digest('hex') };
});
const copyBytes = files.reduce((n, f) => n + f.buf.length, 0);

// ---- the origin: per-connection and total caps, counts body bytes --------------------------
const perConn = Number(values['origin-conn-mib']) * MiB;
const total = Number(values['origin-total-mib']) * MiB;
let originBytes = 0;
let bucketAt = performance.now();
let debt = 0; // bytes ahead of the total cap
function totalDelay(n) {
  if (!total) return 0;
  const now = performance.now();
  debt = Math.max(0, debt - ((now - bucketAt) / 1000) * total) + n;
  bucketAt = now;
  return (debt / total) * 1000;
}
const origin = createServer(async (req, res) => {
  const f = files.find((x) => req.url === `/${x.name}`);
  if (!f) return res.writeHead(404).end();
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  const start = m ? Number(m[1]) : 0;
  const end = m ? (m[2] === '' ? f.buf.length : Math.min(f.buf.length, Number(m[2]) + 1)) : f.buf.length;
  const headers = { 'content-length': String(end - start), etag: `"${f.sha256}"`, 'accept-ranges': 'bytes' };
  if (m) headers['content-range'] = `bytes ${start}-${end - 1}/${f.buf.length}`;
  res.writeHead(m ? 206 : 200, headers);
  const t0 = performance.now();
  let off = start;
  let closed = false;
  res.on('close', () => (closed = true));
  while (off < end && !closed) {
    const n = Math.min(64 * 1024, end - off);
    const ok = res.write(f.buf.subarray(off, off + n));
    originBytes += n;
    off += n;
    const waitConn = perConn ? t0 + ((off - start) / perConn) * 1000 - performance.now() : 0;
    const wait = Math.max(waitConn, totalDelay(n) - 0);
    if (!ok && !closed) {
      await new Promise((r) => {
        const done = () => { res.off('drain', done); res.off('close', done); r(); };
        res.on('drain', done);
        res.on('close', done);
      });
    }
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  }
  res.end();
});
await new Promise((r) => origin.listen(0, '127.0.0.1', r));
const originUrl = `http://127.0.0.1:${origin.address().port}`;
const requests = files.map((f) => ({ key: { kind: 'sha256', sha256: f.sha256 }, label: f.name, size: f.buf.length, sha256: f.sha256, origin: { url: `${originUrl}/${f.name}`, hubHeaders: {} } }));

// ---- nodes --------------------------------------------------------------------------------
const link = Number(values['link-mib']) * MiB;
const nodeOpts = { token: 'bench-peer-token', connections: Number(values.connections), chunkSize: Number(values['chunk-mib']) * MiB, maxRate: link, uploadMaxRate: link, uploadConcurrency: Number(values['upload-concurrency']), ...(values['source-waiters'] !== undefined ? { sourceWaiters: Number(values['source-waiters']) } : {}), ...(values.fanout !== undefined ? { fanout: Number(values.fanout) } : {}) };


async function run(n) {
  const nodes = Array.from({ length: n }, () => startP2PNode(nodeOpts));
  const urls = (await Promise.all(nodes.map((x) => x.next()))).map((m) => m.url);
  const reset = () => {
    originBytes = 0;
    debt = 0;
    bucketAt = performance.now();
  };
  let t0;
  if (values.cold) {
    reset();
    t0 = performance.now();
    for (const x of nodes) x.send({ static: urls, go: requests });
    await Promise.all(nodes.map((x) => x.next()));
  } else {
    for (const x of nodes) x.send({ static: urls });
    await Promise.all(nodes.map((x) => x.next()));
    for (const x of nodes) x.send({ refresh: true });
    await Promise.all(nodes.map((x) => x.next()));
    reset();
    t0 = performance.now();
    for (const x of nodes) x.send({ go: requests });
  }
  const samples = [];
  let last = 0;
  const sampler = setInterval(() => {
    samples.push(((originBytes - last) / MiB).toFixed(0));
    last = originBytes;
  }, 1000);
  const results = await Promise.all(nodes.map((x) => x.next()));
  clearInterval(sampler);
  if (process.env.P2P_BENCH_SAMPLES) console.error(`origin MiB per second, N=${n}: ${samples.join(' ')}`);
  const wall = performance.now() - t0;
  for (const x of nodes) x.send({ exit: true });
  await Promise.all(nodes.map((x) => new Promise((r) => x.child.once('exit', r))));
  return { n, wallMs: wall, originCopies: originBytes / copyBytes, slowestMs: Math.max(...results.map((r) => r.ms)), results };
}

const ns = values.nodes.split(',').map(Number);
console.error(`${values.cold ? 'cold (asked as they start); ' : ''}load ${loadavg()}; model ${(copyBytes / MiB).toFixed(0)} MiB in ${files.length} files; origin ${values['origin-total-mib']} MiB/s total, ${values['origin-conn-mib']} MiB/s per connection; node link ${values['link-mib']} MiB/s each way; ${values.connections} connections, ${values['chunk-mib']} MiB chunks`);
const alone = await run(1);
console.error(`alone: ${(alone.wallMs / 1000).toFixed(2)} s, origin ${alone.originCopies.toFixed(3)} copies`);
const rows = [];
for (const n of ns) {
  const r = await run(n);
  rows.push(r);
  console.error(`N=${n}: all ready in ${(r.wallMs / 1000).toFixed(2)} s (${(r.wallMs / alone.wallMs).toFixed(2)}x alone), origin ${r.originCopies.toFixed(3)} copies, peer timeouts ${r.results.reduce((s, x) => s + x.peerTimeouts, 0)}, 503s ${r.results.reduce((s, x) => s + x.uploadsRejected, 0)}, peer errors ${r.results.reduce((s, x) => s + x.peerErrors, 0)}, node times ${r.results.map((x) => (x.ms / 1000).toFixed(1)).join(' ')}`);
}
console.log('| nodes | one node alone (s) | all ready (s) | ratio | origin bytes (copies) | status requests per node per blob (median / max) | the same per second of pull (median) | goal |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  const ratio = r.wallMs / alone.wallMs;
  const ok = r.originCopies <= 1.05 && ratio <= 1.3 ? 'met' : 'missed';
  const per = r.results.map((x) => x.statusRequests / files.length).sort((a, b) => a - b);
  // Nodes re-ask their trackers at most once a second while placing pieces: longer pulls ask more.
  const perSecond = r.results.map((x) => x.statusRequests / files.length / (x.ms / 1000)).sort((a, b) => a - b);
  console.log(`| ${r.n} | ${(alone.wallMs / 1000).toFixed(2)} | ${(r.wallMs / 1000).toFixed(2)} | ${ratio.toFixed(2)} | ${r.originCopies.toFixed(3)} | ${per[Math.floor(per.length / 2)].toFixed(1)} / ${per.at(-1).toFixed(1)} | ${perSecond[Math.floor(perSecond.length / 2)].toFixed(2)} | ${ok} |`);
}
console.error(`load at the end: ${loadavg()}`);
origin.close();
