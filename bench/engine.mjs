#!/usr/bin/env node
/**
 * The engine's own numbers (issue 16 item 5): the main-thread path against receive worker threads
 * (undici and node:http), on the uncapped nginx origin, next to aria2c -x16; then --max-rate as the
 * origin sees it. Run it under `flock /tmp/swift-fetch-bench.lock` (other benchmarks share the cores).
 *
 *   node bench/engine.mjs [--size 2GiB] [--workers 0,1,2] [--http raw,undici,http] [--rounds 2]
 *                         [--max-rate 20MB/s] [--rate-size 512MiB] [--skip-rate] [--connections 24]
 *
 * Per row: wall time, MB/s, time / aria2c's, CPU seconds in total and on the main thread alone
 * (bench/thread-cpu.mjs), CPU per GiB on the main thread, peak RSS of the process (sampled every
 * 50 ms from /proc), the 1-minute load when the row started. Rows alternate across rounds so a
 * change of load hits every configuration alike. Needs `npm run build` first (it runs dist/).
 * Rate: bench/origin.mjs (Node, counts bytes as it hands them to the socket) serves the file,
 * sampled every 100 ms; the rate is fitted over 10-90 % of the bytes.
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { availableParallelism, cpus } from 'node:os';
import { parseRate, parseSize } from '../dist/core/units.js';
import { startOrigins } from './origins.mjs';
import { ensureFile, loadavg, syncDisks } from './common.mjs';
import { measure } from './measure.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cache = join(root, '.cache/bench');
const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '2GiB' },
    workers: { type: 'string', default: '0,1,2' },
    http: { type: 'string', default: 'raw,undici,http' },
    rounds: { type: 'string', default: '2' },
    connections: { type: 'string', default: '' },
    'max-rate': { type: 'string', default: '20MB/s' },
    'rate-size': { type: 'string', default: '512MiB' },
    'rate-workers': { type: 'string', default: '0,1' },
    'skip-rate': { type: 'boolean', default: false },
    'skip-aria': { type: 'boolean', default: false },
  },
});
const size = parseSize(args.size);
const MB = 1e6;
const GiB = 2 ** 30;
const sfPull = join(root, 'bench/sf-pull.mjs');
const threadCpu = join(root, 'bench/thread-cpu.mjs');

function configs() {
  const out = [];
  for (const w of args.workers.split(',').map(Number)) {
    if (w === 0) out.push({ name: 'engine, main thread (workers 0)', workers: 0 });
    else for (const h of args.http.split(',')) out.push({ name: `engine, ${w} receive worker${w > 1 ? 's' : ''} (${h})`, workers: w, workerHttp: h });
  }
  if (!args['skip-aria']) out.push({ name: 'aria2c -x16 -s16 (not verified)', aria: true });
  return out;
}

function work(name) {
  const d = join(cache, 'work', name);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true });
  return d;
}

async function runOne(c, url, sha256) {
  const dir = work('engine');
  if (c.aria) {
    const r = await measure('aria2c', ['-x16', '-s16', '-d', dir, '-o', 'model.bin', '--allow-overwrite=true', '--auto-file-renaming=false', '--console-log-level=warn', '--summary-interval=0', '--download-result=hide', url]);
    return { ...r, ok: r.code === 0 && statSync(join(dir, 'model.bin')).size === size };
  }
  const spec = { url, sha256, size, partialDir: join(dir, 'partial'), stateDir: join(dir, 'state'), workers: c.workers, ...(c.workerHttp ? { workerHttp: c.workerHttp } : {}), ...(args.connections ? { connections: Number(args.connections) } : {}) };
  const r = await measure(process.execPath, ['--import', threadCpu, sfPull, JSON.stringify(spec)]);
  const last = r.out.map((l) => { try { return JSON.parse(l); } catch { return {}; } }).find((o) => o.ok || o.error);
  const m = /THREAD-CPU (\{.*\})/.exec(r.err);
  return { ...r, ok: !!last?.ok && last.sha256 === sha256, threads: m ? JSON.parse(m[1]) : undefined, error: last?.error };
}

async function rateRun(c, sha256, file) {
  const rateSize = parseSize(args['rate-size']);
  const target = parseRate(args['max-rate']);
  const { file: rf, sha256: rsha } = ensureFile(cache, rateSize);
  const o = spawn(process.execPath, [join(root, 'bench/origin.mjs'), '--file', rf, '--sha256', rsha], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((res) => createInterface({ input: o.stdout }).once('line', (l) => res(JSON.parse(l).port)));
  const base = `http://127.0.0.1:${port}`;
  const samples = [];
  let stop = false;
  const poll = (async () => {
    while (!stop) {
      try {
        const s = await (await fetch(`${base}/__stats`)).json();
        samples.push([performance.now(), s.bytes]);
      } catch {}
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const dir = work('rate');
  const spec = { url: `${base}/file`, sha256: rsha, size: rateSize, partialDir: join(dir, 'partial'), stateDir: join(dir, 'state'), workers: c.workers, maxRate: target };
  const r = await measure(process.execPath, [sfPull, JSON.stringify(spec)]);
  stop = true;
  await poll;
  o.kill();
  const at = (frac) => samples.find(([, b]) => b >= frac * rateSize);
  const a = at(0.1);
  const b = at(0.9);
  const rate = a && b ? (b[1] - a[1]) / ((b[0] - a[0]) / 1000) : NaN;
  return { name: c.name, target, rate, ok: r.code === 0, wall: rateSize / (r.ms / 1000) };
}

const { file, sha256 } = ensureFile(cache, size);
const origin = await startOrigins({ root, file, sha256, size, capRate: 12e6, prefer: 'nginx' });
const started = new Date().toISOString();
const loadBefore = loadavg();
const rows = new Map();
try {
  for (let round = 0; round < Number(args.rounds); round++) {
    for (const c of configs()) {
      syncDisks();
      const load = loadavg().split(' ')[0];
      process.stderr.write(`[round ${round + 1}] ${c.name} (load ${load})...`);
      const r = await runOne(c, origin.uncapped.data, sha256);
      const cpu = r.cpu ? r.cpu.user + r.cpu.sys : NaN;
      process.stderr.write(` ${(r.ms / 1000).toFixed(2)} s, cpu ${cpu.toFixed(2)} s, main ${r.threads?.main ?? '-'} s, rss ${(r.peak / MB).toFixed(0)} MB ${r.ok ? '' : 'FAILED ' + (r.error ?? r.err.slice(0, 300))}\n`);
      if (!rows.has(c.name)) rows.set(c.name, []);
      rows.get(c.name).push({ ...r, cpuTotal: cpu, load });
      rmSync(join(cache, 'work'), { recursive: true, force: true });
    }
  }
} finally {
  origin.stop();
}
const med = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const aria = rows.get('aria2c -x16 -s16 (not verified)');
const ariaMs = aria ? med(aria.map((r) => r.ms)) : undefined;
const out = [
  `Run ${started} on ${availableParallelism()} × ${cpus()[0]?.model}, Node ${process.version}; load before ${loadBefore}; origin ${origin.label}, uncapped.`,
  `File ${size} bytes; ${args.rounds} rounds, rows alternating; medians (each sample in brackets); command: \`node bench/engine.mjs ${process.argv.slice(2).join(' ')}\`.`,
  '',
  '| configuration | time s | MB/s | vs aria2c | CPU s total | main thread CPU s | main CPU s per GiB | peak RSS MB | load | ok |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |',
];
for (const [name, rs] of rows) {
  const ms = med(rs.map((r) => r.ms));
  const mains = rs.map((r) => r.threads?.main).filter((x) => x !== undefined);
  const main = mains.length ? med(mains) : undefined;
  const each = (f, d = 1) => rs.map((r) => f(r).toFixed(d)).join(', ');
  out.push(
    `| ${name} | ${(ms / 1000).toFixed(2)} [${each((r) => r.ms / 1000, 2)}] | ${(size / MB / (ms / 1000)).toFixed(0)} | ${ariaMs ? (ms / ariaMs).toFixed(2) : '–'} | ${med(rs.map((r) => r.cpuTotal)).toFixed(1)} [${each((r) => r.cpuTotal)}] | ${main !== undefined ? `${main.toFixed(2)} [${mains.map((x) => x.toFixed(2)).join(', ')}]` : '–'} | ${main !== undefined ? (main / (size / GiB)).toFixed(2) : '–'} | ${med(rs.map((r) => r.peak / MB)).toFixed(0)} [${each((r) => r.peak / MB, 0)}] | ${rs.map((r) => r.load).join(', ')} | ${rs.every((r) => r.ok) ? 'yes' : 'NO'} |`,
  );
}
if (!args['skip-rate']) {
  out.push('', `--max-rate ${args['max-rate']} as the origin sees it (bench/origin.mjs byte counter, 10-90 % of ${args['rate-size']}):`, '', '| configuration | origin rate 10-90 % | error | whole run | ok |', '| --- | ---: | ---: | ---: | --- |');
  for (const w of args['rate-workers'].split(',').map(Number)) {
    process.stderr.write(`[rate] workers ${w} (load ${loadavg().split(' ')[0]})...`);
    const r = await rateRun({ name: `workers ${w}`, workers: w }, sha256, file);
    process.stderr.write(` ${(r.rate / MB).toFixed(2)} MB/s\n`);
    out.push(`| ${r.name} | ${(r.rate / MB).toFixed(2)} MB/s | ${(((r.rate - r.target) / r.target) * 100).toFixed(1)} % | ${(r.wall / MB).toFixed(2)} MB/s | ${r.ok ? 'yes' : 'NO'} |`);
  }
}
process.stdout.write(out.join('\n') + '\n');
