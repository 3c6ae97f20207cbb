#!/usr/bin/env node
/**
 * Floors for the "where the time goes" table: what Node itself costs for the work a verified pull
 * must do, without swift-fetch's engine around it.
 *
 *   node bench/floor.mjs dispatch URL SIZE [CONNS]   undici dispatch API, body discarded (what the engine uses)
 *   node bench/floor.mjs request  URL SIZE [CONNS]   undici request() + for await over the body Readable
 *   node bench/floor.mjs sha256   FILE              node:crypto SHA-256 over the file (page cache), 1 MiB reads
 *
 * The URL is fetched as CONNS equal Range requests in parallel. Prints one JSON line.
 */
import { Agent, request } from 'undici';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';

const [mode, target, sizeArg, connsArg] = process.argv.slice(2);
const t0 = performance.now();

if (mode === 'sha256') {
  const fd = openSync(target, 'r');
  const buf = Buffer.allocUnsafe(1024 * 1024);
  const h = createHash('sha256');
  let n;
  let total = 0;
  while ((n = readSync(fd, buf, 0, buf.length, null)) > 0) {
    h.update(buf.subarray(0, n));
    total += n;
  }
  closeSync(fd);
  process.stdout.write(JSON.stringify({ mode, bytes: total, sha256: h.digest('hex'), ms: performance.now() - t0 }) + '\n');
} else {
  const size = Number(sizeArg);
  const conns = Number(connsArg ?? 16);
  const u = new URL(target);
  const agent = new Agent({ connections: conns, pipelining: 1, headersTimeout: 0, bodyTimeout: 0 });
  let total = 0;
  const span = Math.ceil(size / conns);
  const viaRequest = async (s, e) => {
    const res = await request(u, { dispatcher: agent, headers: { range: `bytes=${s}-${e - 1}` } });
    for await (const p of res.body) total += p.length;
  };
  const viaDispatch = (s, e) =>
    new Promise((resolve, reject) => {
      agent.dispatch(
        { origin: u.origin, path: u.pathname, method: 'GET', headers: { range: `bytes=${s}-${e - 1}` } },
        {
          onRequestStart() {},
          onResponseStart() {},
          onResponseData(_c, b) {
            total += b.length;
          },
          onResponseEnd: () => resolve(),
          onResponseError: (_c, err) => reject(err),
        },
      );
    });
  const f = mode === 'dispatch' ? viaDispatch : viaRequest;
  const ranges = [];
  for (let s = 0; s < size; s += span) ranges.push([s, Math.min(size, s + span)]);
  await Promise.all(ranges.map(([s, e]) => f(s, e)));
  await agent.close();
  process.stdout.write(JSON.stringify({ mode, conns, bytes: total, ms: performance.now() - t0 }) + '\n');
}
