#!/usr/bin/env node
/**
 * `npm run bench`: swift-fetch against aria2c -x16 -s16, curl (one stream) and `hf download`,
 * side by side on the same local origin, once with every connection capped (like a CDN edge) and
 * once uncapped; then swift-fetch's resume waste after SIGKILL at 40 % and --max-rate accuracy.
 *
 *   node bench/run.mjs [--size 2GiB] [--rate-per-conn 12MB/s] [--max-rate 50MB/s] [--all]
 *                      [--connections 16,32] [--tools swift-fetch,aria2c,curl,hf] [--skip-extra]
 *
 * --all also runs the single-stream tools on the capped origin (size / cap: minutes).
 * The test file is generated once into .cache/bench/. Results: stdout and .cache/bench/results.md.
 */
import { spawn, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { cpus, totalmem } from 'node:os';
import { parseRate, parseSize } from '../dist/core/units.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cache = join(root, '.cache/bench');
const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '2GiB' },
    'rate-per-conn': { type: 'string', default: '12MB/s' },
    'max-rate': { type: 'string', default: '50MB/s' },
    connections: { type: 'string', default: '16,32' },
    tools: { type: 'string', default: 'swift-fetch,aria2c,curl,hf' },
    all: { type: 'boolean', default: false },
    'skip-extra': { type: 'boolean', default: false },
  },
});
const size = parseSize(args.size);
const capRate = parseRate(args['rate-per-conn']);
const maxRate = parseRate(args['max-rate']);
// `--connections 16,32`: the first value is swift-fetch's setting for the main rows; each
// further value adds a row `swift-fetch -cN`.
const connectionList = args.connections.split(',').map(Number);
const connections = connectionList[0];
const tools = new Set(args.tools.split(','));
const MB = 1e6;

function which(cmd) {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------------ the test file

function ensureFile() {
  mkdirSync(cache, { recursive: true });
  const file = join(cache, `data-${size}.bin`);
  const shaFile = `${file}.sha256`;
  if (existsSync(file) && existsSync(shaFile) && statSync(file).size === size) return { file, sha256: readFileSync(shaFile, 'utf8').trim() };
  process.stderr.write(`generating ${(size / MB).toFixed(0)} MB test file in ${file} (once)...\n`);
  const h = createHash('sha256');
  const fd = openSync(file, 'w');
  for (let off = 0; off < size; ) {
    const n = Math.min(16 * 1024 * 1024, size - off);
    const b = randomBytes(n);
    h.update(b);
    writeSync(fd, b);
    off += n;
  }
  closeSync(fd);
  const sha256 = h.digest('hex');
  writeFileSync(shaFile, sha256);
  return { file, sha256 };
}

// ------------------------------------------------------------------ processes

async function startOrigin(file, sha256, rate) {
  const child = spawn(process.execPath, [join(root, 'bench/origin.mjs'), '--file', file, '--sha256', sha256, '--rate-per-conn', String(rate)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (c) => reject(new Error(`origin exited ${c}`)));
  });
  const { port } = JSON.parse(line);
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    stats: async () => (await (await fetch(`${base}/__stats`)).json()),
    stop: () => child.kill('SIGTERM'),
  };
}

function treeRss(rootPid) {
  const kids = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch {}
  }
  let total = 0;
  const stack = [rootPid];
  while (stack.length) {
    const pid = stack.pop();
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) total += Number(m[1]) * 1024;
    } catch {}
    stack.push(...(kids.get(pid) ?? []));
  }
  return total;
}

/** Run a command, sampling the RSS of its process tree; `onLine` sees stdout lines. */
function measure(cmd, argv, { env, onLine, cwd, onSpawn } = {}) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(cmd, argv, { env: { ...process.env, ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    onSpawn?.(child);
    let peak = 0;
    const timer = setInterval(() => {
      peak = Math.max(peak, treeRss(child.pid));
    }, 50);
    const out = [];
    let err = '';
    createInterface({ input: child.stdout }).on('line', (l) => {
      out.push(l);
      onLine?.(l, child);
    });
    child.stderr.on('data', (d) => {
      if (err.length < 4000) err += d;
    });
    child.on('exit', (code, signal) => {
      clearInterval(timer);
      resolve({ ms: performance.now() - t0, peak, code, signal, out, err, child });
    });
  });
}

function freshDir(name) {
  const d = join(cache, 'work', name);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true });
  return d;
}

function syncDisks() {
  try {
    execFileSync('sync');
  } catch {}
}

// ------------------------------------------------------------------ tools

const hfBin = join(root, '.venv/bin/hf');

const runners = {
  'swift-fetch': async (origin, { sha256 }, opts = {}) => {
    const dir = freshDir('sf');
    const spec = { url: `${origin.base}/file`, sha256, size, partialDir: join(dir, 'partial'), stateDir: join(dir, 'state'), connections, ...opts.spec };
    const r = await measure(process.execPath, [join(root, 'bench/sf-pull.mjs'), JSON.stringify(spec)], opts);
    const last = r.out.map((l) => JSON.parse(l)).find((o) => o.ok || o.error);
    r.ok = !!last?.ok && last.sha256 === sha256;
    r.note = last?.ok ? 'sha256 verified' : `error: ${last?.error ?? r.err.slice(0, 200)}`;
    r.dir = dir;
    r.spec = spec;
    return r;
  },
  'swift-fetch --fsync': (origin, file) => runners['swift-fetch'](origin, file, { spec: { fsync: true } }),
  ...Object.fromEntries(connectionList.slice(1).map((n) => [`swift-fetch -c${n}`, (origin, file) => runners['swift-fetch'](origin, file, { spec: { connections: n } })])),
  aria2c: async (origin) => {
    if (!which('aria2c')) return { skipped: 'aria2c is not installed (apt-get install -y aria2)' };
    const dir = freshDir('aria2c');
    const r = await measure('aria2c', ['-x16', '-s16', '-d', dir, '-o', 'model.bin', '--allow-overwrite=true', '--auto-file-renaming=false', '--console-log-level=warn', '--summary-interval=0', '--download-result=hide', `${origin.base}/file`]);
    r.ok = r.code === 0 && statSync(join(dir, 'model.bin')).size === size;
    r.note = r.ok ? 'not verified (size only)' : `exit ${r.code}: ${r.err.slice(0, 200)}`;
    return r;
  },
  curl: async (origin) => {
    if (!which('curl')) return { skipped: 'curl is not installed' };
    const dir = freshDir('curl');
    const r = await measure('curl', ['-sS', '-f', '-o', join(dir, 'model.bin'), `${origin.base}/file`]);
    r.ok = r.code === 0 && statSync(join(dir, 'model.bin')).size === size;
    r.note = r.ok ? 'not verified (size only)' : `exit ${r.code}: ${r.err.slice(0, 200)}`;
    return r;
  },
  hf: async (origin) => {
    if (!existsSync(hfBin)) return { skipped: `hf (huggingface_hub) not installed at ${hfBin}` };
    const dir = freshDir('hf');
    const r = await measure(hfBin, ['download', 'bench/model', 'model.bin', '--local-dir', join(dir, 'out')], {
      env: { HF_ENDPOINT: origin.base, HF_HOME: join(dir, 'home'), HF_HUB_DISABLE_TELEMETRY: '1', HF_HUB_DISABLE_PROGRESS_BARS: '1', HF_HUB_ENABLE_HF_TRANSFER: '0', HF_TOKEN: '', NO_PROXY: '*' },
    });
    const out = join(dir, 'out/model.bin');
    r.ok = r.code === 0 && existsSync(out) && statSync(out).size === size;
    r.note = r.ok ? 'size checked (hf checks size only)' : `exit ${r.code}: ${r.err.trim().split('\n').slice(-2).join(' ').slice(0, 200)}`;
    return r;
  },
};

// ------------------------------------------------------------------ scenarios

async function scenario(name, file, sha256, rate, toolList) {
  const origin = await startOrigin(file, sha256, rate);
  const rows = [];
  try {
    for (const tool of toolList) {
      if (!tools.has(tool.split(' ')[0])) continue;
      syncDisks();
      const before = (await origin.stats()).bytes;
      process.stderr.write(`[${name}] ${tool}...`);
      const r = await runners[tool](origin, { sha256 });
      if (r.skipped) {
        process.stderr.write(` skipped: ${r.skipped}\n`);
        rows.push({ tool, skipped: r.skipped });
        continue;
      }
      const bytes = (await origin.stats()).bytes - before;
      process.stderr.write(` ${(r.ms / 1000).toFixed(1)} s, ${(size / MB / (r.ms / 1000)).toFixed(1)} MB/s, rss ${(r.peak / MB).toFixed(0)} MB ${r.ok ? '' : 'FAILED ' + r.note}\n`);
      rows.push({ tool, ms: r.ms, mbps: size / MB / (r.ms / 1000), bytes, rss: r.peak, ok: r.ok, note: r.note });
      freshDir(tool.startsWith('swift-fetch') ? 'sf' : tool);
    }
  } finally {
    origin.stop();
  }
  return rows;
}

async function resumeWaste(file, sha256) {
  const origin = await startOrigin(file, sha256, capRate);
  try {
    syncDisks();
    const dir = freshDir('sf-resume');
    const spec = { url: `${origin.base}/file`, sha256, size, partialDir: join(dir, 'partial'), stateDir: join(dir, 'state'), connections };
    let child;
    let killed = false;
    const poll = setInterval(async () => {
      const { bytes } = await origin.stats();
      if (!killed && child && bytes >= 0.4 * size) {
        killed = true;
        child.kill('SIGKILL');
      }
    }, 20);
    const p1 = measure(process.execPath, [join(root, 'bench/sf-pull.mjs'), JSON.stringify(spec)], { onSpawn: (c) => (child = c) });
    const r1 = await p1;
    clearInterval(poll);
    const atKill = (await origin.stats()).bytes;
    const r2 = await measure(process.execPath, [join(root, 'bench/sf-pull.mjs'), JSON.stringify(spec)]);
    const total = (await origin.stats()).bytes;
    const last = r2.out.map((l) => JSON.parse(l)).find((o) => o.ok || o.error);
    freshDir('sf-resume');
    return { killedBy: r1.signal, atKill, second: total - atKill, waste: (total - size) / size, ok: !!last?.ok && last.sha256 === sha256 };
  } finally {
    origin.stop();
  }
}

async function maxRateAccuracy(file, sha256) {
  const origin = await startOrigin(file, sha256, 0);
  try {
    syncDisks();
    let first;
    let lastT;
    let lastBytes = 0;
    const r = await runners['swift-fetch'](origin, { sha256 }, {
      spec: { maxRate, progress: true },
      onLine: (l) => {
        const o = JSON.parse(l);
        if (o.bytes === undefined) return;
        const t = performance.now();
        if (!first) first = { t, bytes: o.bytes };
        lastT = t;
        lastBytes = o.bytes;
      },
    });
    freshDir('sf');
    const steady = first && lastT > first.t ? (lastBytes - first.bytes) / ((lastT - first.t) / 1000) : NaN;
    return { target: maxRate, wall: size / (r.ms / 1000), steady, ok: r.ok, rss: r.peak };
  } finally {
    origin.stop();
  }
}

// ------------------------------------------------------------------ report

function table(title, rows, baseline) {
  const ref = rows.find((r) => r.tool === baseline && !r.skipped);
  const lines = [`### ${title}`, '', '| tool | time (s) | MB/s | time vs aria2c | origin bytes | peak RSS (MB) | result |', '| --- | ---: | ---: | ---: | ---: | ---: | --- |'];
  for (const r of rows) {
    if (r.skipped) {
      lines.push(`| ${r.tool} | – | – | – | – | – | skipped: ${r.skipped} |`);
      continue;
    }
    const ratio = ref ? (r.ms / ref.ms).toFixed(2) : 'n/a';
    lines.push(`| ${r.tool} | ${(r.ms / 1000).toFixed(1)} | ${r.mbps.toFixed(1)} | ${ratio} | ${r.bytes} (${((r.bytes / size) * 100).toFixed(1)} %) | ${(r.rss / MB).toFixed(0)} | ${r.ok ? 'ok' : 'FAILED'}: ${r.note} |`);
  }
  return lines.join('\n');
}

const { file, sha256 } = ensureFile();
const started = new Date().toISOString();
const sfRows = ['swift-fetch', 'swift-fetch --fsync', ...connectionList.slice(1).map((n) => `swift-fetch -c${n}`)];
const loadBefore = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const capped = await scenario('capped', file, sha256, capRate, [...sfRows, 'aria2c', ...(args.all ? ['curl', 'hf'] : [])]);
if (!args.all) {
  for (const t of ['curl', 'hf']) if (tools.has(t)) capped.push({ tool: t, skipped: `one stream at ${args['rate-per-conn']} takes ~${Math.round(size / capRate)} s; run with --all` });
}
const uncapped = await scenario('uncapped', file, sha256, 0, [...sfRows, 'aria2c', 'curl', 'hf']);
const out = [
  `Run ${started} on ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}.`,
  `Load average (1/5/15 min) before: ${loadBefore}, after: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')} (other work on the machine skews every row alike).`,
  `File: ${size} bytes (${args.size}); swift-fetch --connections ${connections}; command: \`npm run bench -- ${process.argv.slice(2).join(' ')}\`.`,
  '',
  table(`Capped origin (${args['rate-per-conn']} per connection)`, capped, 'aria2c'),
  '',
  table('Uncapped origin', uncapped, 'aria2c'),
];
const sfU = uncapped.find((r) => r.tool === 'swift-fetch' && !r.skipped);
const curlU = uncapped.find((r) => r.tool === 'curl' && !r.skipped);
if (sfU && curlU) out.push('', `swift-fetch vs curl (uncapped): time ratio ${(sfU.ms / curlU.ms).toFixed(2)}.`);
if (!args['skip-extra'] && tools.has('swift-fetch')) {
  process.stderr.write('[resume] SIGKILL at 40 %...\n');
  const rw = await resumeWaste(file, sha256);
  process.stderr.write('[max-rate]...\n');
  const mr = await maxRateAccuracy(file, sha256);
  out.push(
    '',
    '### swift-fetch: resume and rate limit',
    '',
    '| measure | value |',
    '| --- | --- |',
    `| SIGKILL at 40 %: origin bytes before kill | ${rw.atKill} (${((rw.atKill / size) * 100).toFixed(1)} %) |`,
    `| resumed run: origin bytes | ${rw.second} (${((rw.second / size) * 100).toFixed(1)} %) |`,
    `| resume waste (total − file) / file | ${(rw.waste * 100).toFixed(2)} % ${rw.ok ? '(verified)' : '(FAILED)'} |`,
    `| --max-rate ${args['max-rate']}: achieved, whole run | ${(mr.wall / MB).toFixed(1)} MB/s (${(((mr.wall - mr.target) / mr.target) * 100).toFixed(1)} %) |`,
    `| --max-rate ${args['max-rate']}: achieved, first to last byte | ${(mr.steady / MB).toFixed(1)} MB/s (${(((mr.steady - mr.target) / mr.target) * 100).toFixed(1)} %) |`,
  );
}
const md = out.join('\n') + '\n';
mkdirSync(cache, { recursive: true });
writeFileSync(join(cache, 'results.md'), md);
process.stdout.write('\n' + md);
