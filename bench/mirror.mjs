#!/usr/bin/env node
/**
 * The hub mirror against the origin, with the real `hf download` as the client (issue 11):
 * N clients (1 and 4) at once straight from the origin, then through a daemon's mirror cold (empty
 * store: pulled through while the clients read) and warm (the same daemon again, fresh client
 * caches). Same nginx origin, hub routes and file as bench/run.mjs; capped and uncapped.
 *
 *   npm run build && node bench/mirror.mjs [--size 1GiB] [--rate-per-conn 12MB/s] [--clients 1,4] [--origin nginx|node] [--skip-capped] [--client hf|curl]
 *
 * --client curl replaces `hf download` by `curl -L` of the resolve URL: the same rows without the
 * Python client's own cost, which shows what the daemon itself serves (warm: local-disk speed?).
 *
 * Per row: wall time until the last client is done, MB/s per client and in total, origin bytes
 * (copies of the file), CPU seconds of the daemon and of the clients, the daemon's peak RSS,
 * and whether every client's file has the right SHA-256 (checked after the clock stops).
 * Results: stdout and .cache/bench/mirror.md. `npm run bench` runs this too (`--skip-mirror` not to).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpus, totalmem } from 'node:os';
import { ensureFile, loadavg, settledBytes, syncDisks } from './common.mjs';
import { REPO, FILE_NAME, freePort, startOrigins } from './origins.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cache = join(root, '.cache/bench');
const hfBin = join(root, '.venv/bin/hf');
const MB = 1e6;
const TIME = '/usr/bin/time';

function procStat(pid) {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return { cpu: (Number(f[11]) + Number(f[12])) / 100, rss: Number(f[21]) * 4096 };
  } catch {
    return { cpu: 0, rss: 0 };
  }
}

function sha256Of(path) {
  return new Promise((resolve) => {
    const h = createHash('sha256');
    createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })
      .on('data', (b) => h.update(b))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', () => resolve('missing'));
  });
}

/** The real daemon (`swift-fetch daemon`), mirror on, its hub at `hub`, in its own folder. */
async function startDaemon(dir, hub) {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const config = join(dir, 'daemon.yaml');
  writeFileSync(config, `listen: 127.0.0.1:${port}\nstore: ${join(dir, 'store')}\nstateDir: ${join(dir, 'state')}\nmirror: true\nlogLevel: warn\n`);
  const child = spawn(process.execPath, [join(root, 'bin/swift-fetch.js'), 'daemon', '--config', config], {
    env: { ...process.env, HF_ENDPOINT: hub, HF_TOKEN: '', HF_TOKEN_PATH: join(dir, 'no-token'), NO_PROXY: '*' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d) => {
    if (err.length < 8000) err += d;
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`daemon exited ${child.exitCode}: ${err}`);
    const ok = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
    if (ok) break;
    if (i > 200) throw new Error(`daemon not ready: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const { hfEndpoint } = await (await fetch(`${url}/v1/mirror`)).json();
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, procStat(child.pid).rss)), 50);
  return {
    hfEndpoint,
    cpu: () => procStat(child.pid).cpu,
    peak: () => peak,
    stop: async () => {
      clearInterval(sampler);
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
    },
  };
}

/**
 * One client: `hf download REPO FILE --local-dir …` in its own HF_HOME, or `curl -L` of the resolve
 * URL (what the daemon alone can do, without Python's cost); resolves with exit code and CPU.
 */
function download(client, endpoint, dir) {
  return new Promise((resolve) => {
    const out = join(dir, 'out');
    mkdirSync(out, { recursive: true });
    const argv =
      client === 'curl'
        ? ['curl', '-sS', '-f', '-L', '-o', join(out, FILE_NAME), `${endpoint}/${REPO}/resolve/main/${FILE_NAME}`]
        : [hfBin, 'download', REPO, FILE_NAME, '--local-dir', out];
    // GNU time gives the client's CPU; without it the row still runs (CPU shows as 0).
    const [cmd, ...args] = existsSync(TIME) ? [TIME, '-f', '%U %S', '-o', join(dir, 'time'), ...argv] : argv;
    const child = spawn(cmd, args, {
      env: { ...process.env, HF_ENDPOINT: endpoint, HF_HOME: join(dir, 'home'), HF_HUB_DISABLE_TELEMETRY: '1', HF_HUB_DISABLE_PROGRESS_BARS: '1', HF_HUB_ENABLE_HF_TRANSFER: '0', HF_HUB_DISABLE_XET: '1', HF_TOKEN: '', NO_PROXY: '*' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d) => {
      if (err.length < 4000) err += d;
    });
    child.on('exit', (code) => {
      let cpu = 0;
      try {
        const [u, s] = readFileSync(join(dir, 'time'), 'utf8').trim().split('\n').pop().split(' ').map(Number);
        cpu = u + s;
      } catch {}
      resolve({ code, cpu, err, file: join(out, FILE_NAME) });
    });
  });
}

/** N clients at once against `endpoint`; origin bytes and daemon CPU measured around them. */
async function group(label, endpoint, n, { origin, size, sha256, daemon, work, client }) {
  syncDisks();
  const before = await settledBytes(origin);
  const cpu0 = daemon?.cpu() ?? 0;
  const load = loadavg().split(' ')[0];
  process.stderr.write(`[mirror] ${label} (load ${load})...`);
  const dirs = Array.from({ length: n }, (_, i) => join(work, `${label.replace(/\W+/g, '-')}-${i}`));
  for (const d of dirs) mkdirSync(d, { recursive: true });
  const t0 = performance.now();
  const runs = await Promise.all(dirs.map((d) => download(client, endpoint, d)));
  const ms = performance.now() - t0;
  const bytes = (await settledBytes(origin)) - before;
  const sums = await Promise.all(runs.map((r) => (r.code === 0 ? sha256Of(r.file) : 'failed')));
  const ok = sums.every((s) => s === sha256);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  const row = {
    label, n, ms, load, ok, bytes,
    copies: bytes / size,
    perClient: size / MB / (ms / 1000),
    total: (n * size) / MB / (ms / 1000),
    clientCpu: runs.reduce((a, r) => a + r.cpu, 0),
    daemonCpu: daemon ? daemon.cpu() - cpu0 : undefined,
    note: ok ? 'all files sha256-verified' : `FAILED: ${runs.map((r) => (r.code === 0 ? '' : r.err.trim().split('\n').pop())).filter(Boolean)[0] ?? 'wrong bytes'}`,
  };
  process.stderr.write(` ${(ms / 1000).toFixed(1)} s, ${row.copies.toFixed(3)} origin copies ${ok ? '' : row.note}\n`);
  return row;
}

/** All rows on one origin server (capped or uncapped). */
export async function mirrorScenario(origin, ep, { size, sha256, clients, client = 'hf' }) {
  const work = join(cache, 'work', 'mirror');
  rmSync(work, { recursive: true, force: true });
  const rows = [];
  const tool = client === 'curl' ? 'curl' : 'hf download';
  const opts = { origin, size, sha256, work, client };
  try {
    for (const n of clients) {
      const many = `${n} client${n > 1 ? 's' : ''}`;
      rows.push(await group(`${tool}, origin, ${many}`, ep.hub, n, opts));
      const daemon = await startDaemon(join(work, `daemon-${n}`), ep.hub);
      try {
        const cold = await group(`${tool}, mirror cold, ${many}`, daemon.hfEndpoint, n, { ...opts, daemon });
        const warm = await group(`${tool}, mirror warm, ${many}`, daemon.hfEndpoint, n, { ...opts, daemon });
        cold.rss = warm.rss = daemon.peak();
        rows.push(cold, warm);
      } finally {
        await daemon.stop();
        rmSync(join(work, `daemon-${n}`), { recursive: true, force: true });
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return rows;
}

export function mirrorTable(title, rows) {
  const base = new Map(rows.filter((r) => r.label.includes('origin')).map((r) => [r.n, r]));
  const lines = [
    `### ${title}`,
    '',
    '| clients | path | time (s) | MB/s per client | MB/s total | vs origin | origin bytes (copies) | daemon CPU s | clients CPU s | daemon peak RSS (MB) | load | result |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const r of rows) {
    const path = r.label.replace(/^(hf download|curl), /, '').replace(/, \d+ clients?$/, '');
    const vs = base.get(r.n) ? (r.ms / base.get(r.n).ms).toFixed(2) : '–';
    lines.push(
      `| ${r.n} | ${path} | ${(r.ms / 1000).toFixed(1)} | ${r.perClient.toFixed(1)} | ${r.total.toFixed(1)} | ${vs} | ${r.bytes} (${r.copies.toFixed(3)}) | ${r.daemonCpu === undefined ? '–' : r.daemonCpu.toFixed(1)} | ${r.clientCpu.toFixed(1)} | ${r.rss ? (r.rss / MB).toFixed(0) : '–'} | ${r.load} | ${r.ok ? 'ok' : 'FAILED'}: ${r.note} |`,
    );
  }
  return lines.join('\n');
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      size: { type: 'string', default: '1GiB' },
      'rate-per-conn': { type: 'string', default: '12MB/s' },
      clients: { type: 'string', default: '1,4' },
      origin: { type: 'string', default: 'nginx' },
      'skip-capped': { type: 'boolean', default: false },
      client: { type: 'string', default: 'hf' },
    },
  });
  const { parseRate, parseSize } = await import('../dist/core/units.js');
  if (args.client !== 'curl' && !existsSync(hfBin)) throw new Error(`hf (huggingface_hub) not installed at ${hfBin} (.ci/setup-python.sh)`);
  const size = parseSize(args.size);
  const capRate = parseRate(args['rate-per-conn']);
  const clients = args.clients.split(',').map(Number).filter((n) => n > 0);
  const { file, sha256 } = ensureFile(cache, size);
  const started = new Date().toISOString();
  const loadBefore = loadavg();
  const origin = await startOrigins({ root, file, sha256, size, capRate, prefer: args.origin });
  const out = [
    `Run ${started} on ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}.`,
    `Origin: ${origin.label}. Load average before: ${loadBefore}.`,
    `File: ${size} bytes (${args.size}); command: \`node bench/mirror.mjs${process.argv.length > 2 ? ' ' + process.argv.slice(2).join(' ') : ''}\`.`,
  ];
  try {
    const client = args.client === 'curl' ? 'curl' : 'hf';
    const uncapped = await mirrorScenario(origin, origin.uncapped, { size, sha256, clients, client });
    out.push('', mirrorTable(`Mirror, uncapped origin, client ${client}`, uncapped));
    if (!args['skip-capped']) {
      const capped = await mirrorScenario(origin, origin.capped, { size, sha256, clients, client });
      out.push('', mirrorTable(`Mirror, capped origin (${args['rate-per-conn']} per connection), client ${client}`, capped));
    }
  } finally {
    origin.stop();
  }
  const md = out.join('\n') + '\n';
  mkdirSync(cache, { recursive: true });
  writeFileSync(join(cache, 'mirror.md'), md);
  process.stdout.write('\n' + md);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
