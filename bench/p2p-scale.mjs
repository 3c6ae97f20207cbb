#!/usr/bin/env node
/**
 * Control traffic as the cluster grows (issue 16 item 2): R real nodes (bench/p2p-node.mjs: the
 * peer server, the peer chunk source and the engine) pull a model while S simulated peers in this
 * process speak the real peer protocol (`/v1/peer/info`, blob status, ranged data, bearer token).
 * Simulated peers hold the model and act like fetching nodes: every second each one announces
 * itself (a status request with `x-swift-fetch-fetching: 1`) to the blob's trackers among the real
 * nodes, as a real node following the same rule would. Reported: blob status requests each real
 * node sent, per blob, with and without the tracker rule (`--fanout`; 1000 = ask every peer, the
 * old behaviour), and what the busiest simulated peer received.
 *
 *   npm run build && TMPDIR=/dev/shm node bench/p2p-scale.mjs [--real 4] [--sims 0,60,252] [--size-mib 32]
 *        [--fanouts 3,1000] [--origin-mib 16]
 *
 * Real daemons at N = 4, 8, 16 with every node fetching cold: bench/p2p.mjs (its table has the
 * same per-node status-request column).
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { trackersOf } from '../dist/p2p/rendezvous.js';
import { loadavg, startP2PNode } from './common.mjs';

const MiB = 1024 * 1024;
const { values } = parseArgs({
  options: {
    real: { type: 'string', default: '4' },
    sims: { type: 'string', default: '0,60,252' },
    'size-mib': { type: 'string', default: '32' },
    fanouts: { type: 'string', default: '3,1000' },
    'origin-mib': { type: 'string', default: '16' },
  },
});
const TOKEN = 'bench-peer-token';
const total = Number(values['size-mib']) * MiB;
const files = [0, 1].map((i) => {
  const buf = Buffer.alloc(total / 2);
  for (let k = 0; k < buf.length; k += 4) buf.writeUInt32LE((k * 2654435761 + i) >>> 0, k);
  return { name: `shard-${i}.bin`, buf, sha256: createHash('sha256').update(buf).digest('hex') };
});
const bySha = new Map(files.map((f) => [f.sha256, f]));

// ---- origin (capped, so peers are worth asking) ------------------------------------------------
let originBytes = 0;
const originRate = Number(values['origin-mib']) * MiB;
const origin = createServer(async (req, res) => {
  const f = files.find((x) => req.url === `/${x.name}`);
  if (!f) return res.writeHead(404).end();
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  const start = m ? Number(m[1]) : 0;
  const end = m ? (m[2] === '' ? f.buf.length : Math.min(f.buf.length, Number(m[2]) + 1)) : f.buf.length;
  res.writeHead(m ? 206 : 200, { 'content-length': String(end - start), etag: `"${f.sha256}"`, ...(m ? { 'content-range': `bytes ${start}-${end - 1}/${f.buf.length}` } : {}) });
  const t0 = performance.now();
  let closed = false;
  res.on('close', () => (closed = true));
  for (let off = start; off < end && !closed; ) {
    const n = Math.min(64 * 1024, end - off);
    const ok = res.write(f.buf.subarray(off, off + n));
    originBytes += n;
    off += n;
    if (!ok) {
      await new Promise((r) => {
        const done = () => { res.off('drain', done); res.off('close', done); r(); };
        res.on('drain', done);
        res.on('close', done);
      });
    }
    const wait = t0 + ((off - start) / originRate) * 1000 - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  }
  res.end();
});
await new Promise((r) => origin.listen(0, '127.0.0.1', r));
const originUrl = `http://127.0.0.1:${origin.address().port}`;
const requests = files.map((f) => ({ key: { kind: 'sha256', sha256: f.sha256 }, label: f.name, size: f.buf.length, sha256: f.sha256, origin: { url: `${originUrl}/${f.name}`, hubHeaders: {} } }));

// ---- simulated peers ----------------------------------------------------------------------------
function startSim(id) {
  const sim = { id, url: '', received: { info: 0, status: 0, data: 0 }, interested: new Map() };
  sim.server = createServer((req, res) => {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return res.writeHead(401).end();
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/v1/peer/info') {
      sim.received.info++;
      return json(res, 200, { nodeId: id, protocol: 1 });
    }
    const m = /^\/v1\/peer\/blobs\/([0-9a-f]{64})(\/data)?$/.exec(u.pathname);
    const f = m && bySha.get(m[1]);
    if (!f) return json(res, 404, { error: 'unknown' });
    const asker = req.headers['x-swift-fetch-node'];
    if (typeof asker === 'string' && req.headers['x-swift-fetch-fetching'] === '1') {
      let s = sim.interested.get(f.sha256);
      if (!s) sim.interested.set(f.sha256, (s = new Set()));
      s.add(asker);
    }
    if (!m[2]) {
      sim.received.status++;
      // A holder that also relays what it heard: a few other holders, and who asked it.
      const peers = sims.filter((o) => o !== sim).slice(0, 32).map((o) => ({ nodeId: o.id, complete: true, fetching: false, ranges: [[0, f.buf.length]], inflight: [] }));
      return json(res, 200, { nodeId: id, sha256: f.sha256, size: f.buf.length, complete: true, fetching: false, ranges: [[0, f.buf.length]], inflight: [], interested: [...(sim.interested.get(f.sha256) ?? [])], peers });
    }
    sim.received.data++;
    const r = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    const start = r ? Number(r[1]) : 0;
    const end = r ? Number(r[2]) + 1 : f.buf.length;
    res.writeHead(r ? 206 : 200, { 'content-length': String(end - start), 'x-swift-fetch-node': id, ...(r ? { 'content-range': `bytes ${start}-${end - 1}/${f.buf.length}` } : {}) });
    res.end(f.buf.subarray(start, end));
  });
  return new Promise((r) => sim.server.listen(0, '127.0.0.1', () => { sim.url = `http://127.0.0.1:${sim.server.address().port}`; r(sim); }));
}
function json(res, status, body) {
  const b = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b) }).end(b);
}
let sims = [];

/** Every second, each simulated peer announces itself to each blob's trackers that are real nodes. */
function announcer(realIds, realUrls, fanout) {
  const all = [...realIds, ...sims.map((s) => s.id)];
  const targets = files.map((f) => {
    const t = fanout >= all.length - 1 ? new Set(all) : trackersOf(f.sha256, all, fanout);
    return { sha: f.sha256, real: realIds.map((id, i) => ({ id, url: realUrls[i] })).filter((x) => t.has(x.id)) };
  });
  const tick = () => {
    for (const s of sims) {
      for (const t of targets) {
        for (const r of t.real) {
          fetch(`${r.url}/v1/peer/blobs/${t.sha}`, { headers: { authorization: `Bearer ${TOKEN}`, 'x-swift-fetch-node': s.id, 'x-swift-fetch-fetching': '1' } }).then((x) => x.arrayBuffer()).catch(() => undefined);
        }
      }
    }
  };
  tick();
  return setInterval(tick, 1000);
}

// ---- real nodes ---------------------------------------------------------------------------------

async function run(nSims, fanout) {
  sims = await Promise.all(Array.from({ length: nSims }, (_, i) => startSim(`sim-${i}`)));
  const nodes = Array.from({ length: Number(values.real) }, () => startP2PNode({ token: TOKEN, connections: 8, chunkSize: 2 * MiB, uploadConcurrency: 8, fanout }));
  const urls = (await Promise.all(nodes.map((x) => x.next()))).map((m) => m.url);
  for (const x of nodes) x.send({ static: [...urls, ...sims.map((s) => s.url)] });
  const ids = (await Promise.all(nodes.map((x) => x.next()))).map((m) => m.joined);
  for (const x of nodes) x.send({ refresh: true });
  await Promise.all(nodes.map((x) => x.next()));
  for (const s of sims) s.received = { info: 0, status: 0, data: 0 };
  originBytes = 0;
  const timer = announcer(ids, urls, fanout);
  const t0 = performance.now();
  for (const x of nodes) x.send({ go: requests });
  const results = await Promise.all(nodes.map((x) => x.next()));
  const wall = (performance.now() - t0) / 1000;
  clearInterval(timer);
  for (const x of nodes) x.send({ exit: true });
  await Promise.all(nodes.map((x) => new Promise((r) => x.child.once('exit', r))));
  await Promise.all(sims.map((s) => new Promise((r) => s.server.close(r))));
  const perBlob = results.map((r) => r.statusRequests / files.length).sort((a, b) => a - b);
  const busiest = sims.reduce((m, s) => Math.max(m, s.received.status), 0);
  return { nodes: Number(values.real) + nSims, nSims, fanout, wall, perBlob, busiestSimStatusPerBlob: busiest / files.length, originCopies: originBytes / total, load: loadavg() };
}

const rows = [];
for (const fanout of values.fanouts.split(',').map(Number)) {
  for (const n of values.sims.split(',').map(Number)) {
    const r = await run(n, fanout);
    rows.push(r);
    console.error(JSON.stringify(r));
  }
}
origin.close();
console.log('| nodes (real + simulated) | rule | status requests per real node per blob (min / median / max) | busiest simulated peer: status requests received per blob | all real nodes done (s) | origin copies | load |');
console.log('| --- | --- | --- | ---: | ---: | ---: | --- |');
for (const r of rows) {
  const med = r.perBlob[Math.floor(r.perBlob.length / 2)];
  const rule = r.fanout >= 1000 ? 'ask every peer' : `the blob's trackers (fanout ${r.fanout})`;
  console.log(`| ${r.nodes} (${r.nodes - r.nSims} + ${r.nSims}) | ${rule} | ${r.perBlob[0].toFixed(0)} / ${med.toFixed(0)} / ${r.perBlob.at(-1).toFixed(0)} | ${r.busiestSimStatusPerBlob.toFixed(0)} | ${r.wall.toFixed(1)} | ${r.originCopies.toFixed(3)} | ${r.load} |`);
}
