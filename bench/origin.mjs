#!/usr/bin/env node
/**
 * Fallback benchmark origin (bench/run.mjs prefers nginx, see bench/origins.mjs): serves one file with Range support, optionally capping every connection's
 * rate (like a CDN edge), and the few Hugging Face routes `hf download` needs. Runs as its own
 * process so its CPU and memory are not charged to the client being measured.
 *
 *   node bench/origin.mjs --file F --sha256 H [--rate-per-conn BYTES] [--host 127.0.0.1]
 *
 * Prints {"port": N} on stdout. GET /__stats -> {"bytes": body bytes sent, "requests": n}.
 */
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { hubJson } from './origins.mjs';

const { values } = parseArgs({
  options: {
    file: { type: 'string' },
    sha256: { type: 'string' },
    'rate-per-conn': { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
  },
});
const file = values.file;
const sha = values.sha256;
const size = statSync(file).size;
const rate = Number(values['rate-per-conn']);
const COMMIT = 'b'.repeat(40);
let bytes = 0;
let requests = 0;

function sendRange(req, res, start, end) {
  if (req.method === 'HEAD' || end <= start) return res.end();
  const stream = createReadStream(file, { start, end: end - 1, highWaterMark: rate ? 64 * 1024 : 1024 * 1024 });
  const t0 = performance.now();
  let sent = 0;
  stream.on('data', (buf) => {
    bytes += buf.length;
    sent += buf.length;
    const ok = res.write(buf);
    let wait = 0;
    if (rate) wait = t0 + (sent / rate) * 1000 - performance.now();
    if (!ok || wait > 0) {
      stream.pause();
      let drained = ok;
      let timed = wait <= 0;
      const go = () => drained && timed && !res.destroyed && stream.resume();
      if (!ok) res.once('drain', () => { drained = true; go(); });
      if (wait > 0) setTimeout(() => { timed = true; go(); }, wait);
    }
  });
  stream.on('end', () => res.end());
  stream.on('error', () => res.destroy());
  res.on('close', () => stream.destroy());
}

function serveFile(req, res, extra = {}) {
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  const headers = { 'accept-ranges': 'bytes', etag: `"${sha}"`, 'x-linked-etag': `"${sha}"`, 'x-linked-size': String(size), 'x-repo-commit': COMMIT, ...extra };
  if (m) {
    const start = Number(m[1]);
    const end = m[2] === '' ? size : Math.min(size, Number(m[2]) + 1);
    if (start >= size) {
      res.writeHead(416, { 'content-range': `bytes */${size}` });
      return res.end();
    }
    res.writeHead(206, { ...headers, 'content-length': String(end - start), 'content-range': `bytes ${start}-${end - 1}/${size}` });
    return sendRange(req, res, start, end);
  }
  res.writeHead(200, { ...headers, 'content-length': String(size) });
  return sendRange(req, res, 0, size);
}

const server = createServer((req, res) => {
  requests++;
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/__stats') {
    requests--;
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ bytes, requests }));
  }
  if (url.pathname === '/file' || /^\/bench\/model\/resolve\/[^/]+\/model\.bin$/.test(url.pathname)) return serveFile(req, res);
  if (/^\/api\/models\/bench\/model(\/revision\/[^/]+)?$/.test(url.pathname)) {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify(hubJson(sha, size).model));
  }
  if (/^\/api\/models\/bench\/model\/tree\//.test(url.pathname)) {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify(hubJson(sha, size).tree));
  }
  res.writeHead(404, { 'x-error-code': 'EntryNotFound' });
  res.end();
});
server.keepAliveTimeout = 60_000;
server.listen(0, values.host, () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
