#!/usr/bin/env node
/**
 * `npm run bench`: swift-fetch (its engine and its CLI) against aria2c -x16 -s16, curl (one stream,
 * plain and verified) and `hf download`, side by side on the same local origin: nginx with every
 * connection capped (like a CDN edge) and uncapped. Then swift-fetch's resume waste after SIGKILL
 * at 40 %, --max-rate accuracy, and CPU floors (what Node, undici and SHA-256 cost on their own).
 *
 *   node bench/run.mjs [--size 2GiB] [--rate-per-conn 12MB/s] [--max-rate 50MB/s] [--all]
 *                      [--connections 16] [--tools swift-fetch,cli,aria2c,curl,hf] [--skip-extra]
 *                      [--origin nginx|node] [--skip-mirror]
 *
 * --connections: extra engine rows at these connection counts (the main rows use the default).
 * --all also runs the single-stream tools on the capped origin (size / cap: minutes each).
 * --skip-mirror leaves out the hub mirror rows (bench/mirror.mjs; run it alone for the capped origin too).
 * --origin node forces bench/origin.mjs (used automatically, and named, when nginx is missing).
 * The test file is generated once into .cache/bench/. Results: stdout and .cache/bench/results.md.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpus, totalmem } from 'node:os';
import { parseRate, parseSize } from '../dist/core/units.js';
import { DEFAULT_CONNECTIONS } from '../dist/transfer/plan.js';
import { REPO, FILE_NAME, startOrigins } from './origins.mjs';
import { ensureFile, loadavg, settledBytes, syncDisks } from './common.mjs';
import { mirrorScenario, mirrorTable } from './mirror.mjs';
import { TIME, measure } from './measure.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cache = join(root, '.cache/bench');
const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '2GiB' },
    'rate-per-conn': { type: 'string', default: '12MB/s' },
    'max-rate': { type: 'string', default: '50MB/s' },
    connections: { type: 'string', default: '16,32' },
    tools: { type: 'string', default: 'swift-fetch,cli,aria2c,curl,hf' },
    all: { type: 'boolean', default: false },
    'skip-extra': { type: 'boolean', default: false },
    'skip-mirror': { type: 'boolean', default: false },
    origin: { type: 'string', default: 'nginx' },
  },
});
const size = parseSize(args.size);
const capRate = parseRate(args['rate-per-conn']);
const maxRate = parseRate(args['max-rate']);
const extraConnections = args.connections
  .split(',')
  .filter(Boolean)
  .map(Number)
  .filter((n) => n !== DEFAULT_CONNECTIONS);
const tools = new Set(args.tools.split(','));
const MB = 1e6;

function which(cmd) {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------------ processes (bench/measure.mjs)

function freshDir(name) {
  const d = join(cache, 'work', name);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true });
  return d;
}

// ------------------------------------------------------------------ tools

const hfBin = join(root, '.venv/bin/hf');
const sfPull = join(root, 'bench/sf-pull.mjs');

function parseLines(out) {
  return out.flatMap((l) => {
    try {
      return [JSON.parse(l)];
    } catch {
      return [];
    }
  });
}

async function engine(ep, { sha256 }, opts = {}) {
  const dir = freshDir('sf');
  const spec = { url: ep.data, sha256, size, partialDir: join(dir, 'partial'), stateDir: join(dir, 'state'), ...opts.spec };
  const r = await measure(process.execPath, [sfPull, JSON.stringify(spec)], opts);
  const last = parseLines(r.out).find((o) => o.ok || o.error);
  r.ok = !!last?.ok && last.sha256 === sha256;
  r.note = last?.ok ? 'sha256 verified' : `error: ${last?.error ?? r.err.slice(0, 200)}`;
  return r;
}

function singleStream(label, pipeline) {
  return async (ep, { sha256 }) => {
    if (!which('curl')) return { skipped: 'curl is not installed' };
    for (const t of pipeline.needs ?? []) if (!which(t)) return { skipped: `${t} is not installed` };
    const dir = freshDir('curl');
    const out = join(dir, 'model.bin');
    const r = await measure('sh', ['-c', pipeline.cmd(ep.data, out)]);
    const got = (r.out.join('\n').match(/[0-9a-f]{64}/) ?? [])[0];
    const sizeOk = r.code === 0 && existsSync(out) && statSync(out).size === size;
    if (pipeline.verifies) {
      r.ok = sizeOk && got === sha256;
      r.note = r.ok ? `sha256 verified (${label})` : `exit ${r.code}, hash ${got ?? 'none'}: ${r.err.slice(0, 200)}`;
    } else {
      r.ok = sizeOk;
      r.note = r.ok ? 'not verified (size only)' : `exit ${r.code}: ${r.err.slice(0, 200)}`;
    }
    return r;
  };
}

const runners = {
  'swift-fetch CLI': async (ep, { sha256 }) => {
    const dir = freshDir('sf-cli');
    const r = await measure(
      process.execPath,
      [join(root, 'bin/swift-fetch.js'), '--store', join(dir, 'store'), '--state-dir', join(dir, 'state'), '--json', 'pull', `hf://${REPO}`],
      { env: { HF_ENDPOINT: ep.hub, HF_TOKEN: '', HTTPS_PROXY: '', HTTP_PROXY: '', https_proxy: '', http_proxy: '' } },
    );
    const done = parseLines(r.out).find((o) => o.type === 'done');
    const published = done ? join(done.path, FILE_NAME) : undefined;
    r.ok = r.code === 0 && !!published && existsSync(published) && statSync(published).size === size;
    r.note = r.ok ? `sha256 verified, published (\`pull hf://${REPO}\`)` : `exit ${r.code}: ${r.err.trim().split('\n').slice(-3).join(' ').slice(0, 300)}`;
    return r;
  },
  'swift-fetch engine': (ep, file) => engine(ep, file),
  'swift-fetch engine, fsync': (ep, file) => engine(ep, file, { spec: { fsync: true } }),
  // The engine before receive threads (issue 16): every byte on the main thread.
  'swift-fetch engine, main thread only': (ep, file) => engine(ep, file, { spec: { workers: 0 } }),
  ...Object.fromEntries(extraConnections.map((n) => [`swift-fetch engine, ${n} connections`, (ep, file) => engine(ep, file, { spec: { connections: n } })])),
  'aria2c -x16 -s16': async (ep) => {
    if (!which('aria2c')) return { skipped: 'aria2c is not installed (apt-get install -y aria2)' };
    const dir = freshDir('aria2c');
    const r = await measure('aria2c', ['-x16', '-s16', '-d', dir, '-o', 'model.bin', '--allow-overwrite=true', '--auto-file-renaming=false', '--console-log-level=warn', '--summary-interval=0', '--download-result=hide', ep.data]);
    r.ok = r.code === 0 && statSync(join(dir, 'model.bin')).size === size;
    r.note = r.ok ? 'not verified (size only)' : `exit ${r.code}: ${r.err.slice(0, 200)}`;
    return r;
  },
  curl: singleStream('curl', { cmd: (url, out) => `curl -sS -f -o '${out}' '${url}'` }),
  'curl | tee | sha256sum': singleStream('coreutils sha256sum', { verifies: true, needs: ['sha256sum'], cmd: (url, out) => `curl -sS -f '${url}' | tee '${out}' | sha256sum` }),
  'curl | tee | openssl sha256': singleStream('openssl dgst', { verifies: true, needs: ['openssl'], cmd: (url, out) => `curl -sS -f '${url}' | tee '${out}' | openssl dgst -sha256 -r` }),
  'hf download': async (ep) => {
    if (!existsSync(hfBin)) return { skipped: `hf (huggingface_hub) not installed at ${hfBin} (.ci/setup-python.sh)` };
    const dir = freshDir('hf');
    const r = await measure(hfBin, ['download', REPO, FILE_NAME, '--local-dir', join(dir, 'out')], {
      env: { HF_ENDPOINT: ep.hub, HF_HOME: join(dir, 'home'), HF_HUB_DISABLE_TELEMETRY: '1', HF_HUB_DISABLE_PROGRESS_BARS: '1', HF_HUB_ENABLE_HF_TRANSFER: '0', HF_HUB_DISABLE_XET: '1', HF_TOKEN: '', NO_PROXY: '*' },
    });
    const out = join(dir, 'out', FILE_NAME);
    r.ok = r.code === 0 && existsSync(out) && statSync(out).size === size;
    r.note = r.ok ? 'size checked (hf checks size only)' : `exit ${r.code}: ${r.err.trim().split('\n').slice(-2).join(' ').slice(0, 200)}`;
    return r;
  },
};

const toolGroup = (name) => (name.startsWith('swift-fetch CLI') ? 'cli' : name.startsWith('swift-fetch') ? 'swift-fetch' : name.startsWith('aria2c') ? 'aria2c' : name.startsWith('curl') ? 'curl' : 'hf');
const SINGLE = ['curl', 'curl | tee | sha256sum', 'curl | tee | openssl sha256', 'hf download'];
const sfRows = ['swift-fetch CLI', 'swift-fetch engine', 'swift-fetch engine, fsync', 'swift-fetch engine, main thread only', ...extraConnections.map((n) => `swift-fetch engine, ${n} connections`)];

// ------------------------------------------------------------------ scenarios

async function scenario(name, origin, ep, sha256, toolList) {
  const rows = [];
  for (const tool of toolList) {
    if (!tools.has(toolGroup(tool))) continue;
    syncDisks();
    const before = await settledBytes(origin);
    const cpu0 = origin.cpu();
    const load = loadavg().split(' ')[0];
    process.stderr.write(`[${name}] ${tool} (load ${load})...`);
    const r = await runners[tool](ep, { sha256 });
    if (r.skipped) {
      process.stderr.write(` skipped: ${r.skipped}\n`);
      rows.push({ tool, skipped: r.skipped });
      continue;
    }
    const bytes = (await settledBytes(origin)) - before;
    const originCpu = origin.cpu() - cpu0;
    const cpu = r.cpu ? r.cpu.user + r.cpu.sys : undefined;
    process.stderr.write(` ${(r.ms / 1000).toFixed(1)} s, ${(size / MB / (r.ms / 1000)).toFixed(1)} MB/s, cpu ${cpu?.toFixed(1) ?? '?'} s, rss ${(r.peak / MB).toFixed(0)} MB ${r.ok ? '' : 'FAILED ' + r.note}\n`);
    rows.push({ tool, ms: r.ms, mbps: size / MB / (r.ms / 1000), bytes, rss: r.peak, ok: r.ok, note: r.note, cpu: r.cpu, originCpu, load });
    rmSync(join(cache, 'work'), { recursive: true, force: true });
  }
  return rows;
}

async function resumeWaste(origin, ep, sha256) {
  syncDisks();
  const dir = freshDir('sf-resume');
  const spec = { url: ep.data, sha256, size, partialDir: join(dir, 'partial'), stateDir: join(dir, 'state'), progress: true };
  const start = await settledBytes(origin);
  let killed = false;
  // Killed from the engine's own progress (bytes written): nginx only logs a request when it ends.
  const r1 = await measure(process.execPath, [sfPull, JSON.stringify(spec)], {
    onLine: (l, child) => {
      const o = JSON.parse(l);
      if (!killed && o.bytes >= 0.4 * size) {
        killed = true;
        // GNU time is the parent: kill the pull itself.
        for (const pid of childrenOf(child.pid)) process.kill(pid, 'SIGKILL');
        if (!TIME) child.kill('SIGKILL');
      }
    },
  });
  const atKill = (await settledBytes(origin)) - start;
  const r2 = await measure(process.execPath, [sfPull, JSON.stringify({ ...spec, progress: false })]);
  const total = (await settledBytes(origin)) - start;
  const last = parseLines(r2.out).find((o) => o.ok || o.error);
  rmSync(join(cache, 'work'), { recursive: true, force: true });
  return { killed: killed && r1.code !== 0, atKill, second: total - atKill, waste: (total - size) / size, ok: !!last?.ok && last.sha256 === sha256 };
}

function childrenOf(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function maxRateAccuracy(ep, sha256) {
  syncDisks();
  let first;
  let lastT;
  let lastBytes = 0;
  const r = await engine(ep, { sha256 }, {
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
  rmSync(join(cache, 'work'), { recursive: true, force: true });
  const steady = first && lastT > first.t ? (lastBytes - first.bytes) / ((lastT - first.t) / 1000) : NaN;
  return { target: maxRate, wall: size / (r.ms / 1000), steady, ok: r.ok };
}

/** CPU floors on the uncapped origin: what the parts of a verified pull cost on their own. */
async function floors(ep, file, sha256) {
  const rows = [];
  const run = async (label, cmd, argv) => {
    syncDisks();
    process.stderr.write(`[floors] ${label}...`);
    const r = await measure(cmd, argv);
    process.stderr.write(` ${(r.ms / 1000).toFixed(1)} s, cpu ${r.cpu ? (r.cpu.user + r.cpu.sys).toFixed(2) : '?'} s\n`);
    rows.push({ label, ms: r.ms, cpu: r.cpu, ok: r.code === 0, err: r.code === 0 ? '' : r.err.slice(0, 200), rss: r.peak, stderr: r.err });
    return r;
  };
  if (which('curl')) await run('curl -o /dev/null (receive only)', 'curl', ['-sS', '-f', '-o', '/dev/null', ep.data]);
  await run('undici dispatch, 16 ranges, body discarded', process.execPath, [join(root, 'bench/floor.mjs'), 'dispatch', ep.data, String(size), '16']);
  await run('undici request() + for await, 16 ranges, body discarded', process.execPath, [join(root, 'bench/floor.mjs'), 'request', ep.data, String(size), '16']);
  await run('node:crypto SHA-256 of the file (page cache)', process.execPath, [join(root, 'bench/floor.mjs'), 'sha256', file]);
  if (which('sha256sum')) await run('coreutils sha256sum of the file', 'sha256sum', [file]);
  if (which('openssl')) await run('openssl dgst -sha256 of the file', 'openssl', ['dgst', '-sha256', file]);
  const dir = freshDir('sf');
  const spec = { url: ep.data, sha256, size, partialDir: join(dir, 'partial'), stateDir: join(dir, 'state') };
  const eng = await run('swift-fetch engine (default), per thread', process.execPath, ['--import', join(root, 'bench/thread-cpu.mjs'), sfPull, JSON.stringify(spec)]);
  rmSync(join(cache, 'work'), { recursive: true, force: true });
  const m = /THREAD-CPU (\{.*\})/.exec(eng.err);
  return { rows, threads: m ? JSON.parse(m[1]) : undefined };
}

// ------------------------------------------------------------------ report

const fmtCpu = (c) => (c ? `${(c.user + c.sys).toFixed(1)} (${c.user.toFixed(1)} + ${c.sys.toFixed(1)})` : '–');

function table(title, rows) {
  const aria = rows.find((r) => r.tool.startsWith('aria2c') && !r.skipped);
  const curl = rows.find((r) => r.tool === 'curl' && !r.skipped);
  const lines = [
    `### ${title}`,
    '',
    '| tool | time (s) | MB/s | vs aria2c | vs curl | CPU s (user + sys) | origin bytes | origin CPU s | peak RSS (MB) | load | result |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const r of rows) {
    const name = r.tool.replaceAll('|', '\\|');
    if (r.skipped) {
      lines.push(`| ${name} | – | – | – | – | – | – | – | – | – | skipped: ${r.skipped} |`);
      continue;
    }
    const va = aria ? (r.ms / aria.ms).toFixed(2) : 'n/a';
    const vc = curl ? (r.ms / curl.ms).toFixed(2) : '–';
    lines.push(
      `| ${name} | ${(r.ms / 1000).toFixed(1)} | ${r.mbps.toFixed(1)} | ${va} | ${vc} | ${fmtCpu(r.cpu)} | ${r.bytes} (${((r.bytes / size) * 100).toFixed(1)} %) | ${r.originCpu.toFixed(1)} | ${(r.rss / MB).toFixed(0)} | ${r.load} | ${r.ok ? 'ok' : 'FAILED'}: ${r.note} |`,
    );
  }
  return lines.join('\n');
}

const { file, sha256 } = ensureFile(cache, size);
const started = new Date().toISOString();
const loadBefore = loadavg();
const origin = await startOrigins({ root, file, sha256, size, capRate, prefer: args.origin });
process.stderr.write(`origin: ${origin.label}\n`);
process.once('SIGINT', () => {
  origin.stop();
  process.exit(130);
});
let capped;
let uncapped;
const out = [];
try {
  const capTools = [...sfRows, 'aria2c -x16 -s16', ...(args.all ? SINGLE : [])];
  capped = await scenario('capped', origin, origin.capped, sha256, capTools);
  if (!args.all) {
    for (const t of SINGLE) if (tools.has(toolGroup(t))) capped.push({ tool: t, skipped: `one stream at ${args['rate-per-conn']} takes ~${Math.round(size / capRate)} s; run with --all` });
  }
  uncapped = await scenario('uncapped', origin, origin.uncapped, sha256, [...sfRows, 'aria2c -x16 -s16', ...SINGLE]);
  out.push(
    `Run ${started} on ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}.`,
    `Origin: ${origin.label}.`,
    `Load average (1/5/15 min) before: ${loadBefore}; the load column is the 1-minute average when each row started.`,
    `File: ${size} bytes (${args.size}); engine default --connections ${DEFAULT_CONNECTIONS}; command: \`npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}\`.`,
    'CPU: user + sys seconds of the tool and all its threads and children (GNU time); origin CPU: the origin server during that row.',
    '',
    table(`Capped origin (${args['rate-per-conn']} per connection)`, capped),
    '',
    table('Uncapped origin', uncapped),
  );
  if (!args['skip-extra'] && tools.has('swift-fetch')) {
    process.stderr.write('[resume] SIGKILL at 40 %...\n');
    const rw = await resumeWaste(origin, origin.capped, sha256);
    process.stderr.write('[max-rate]...\n');
    const mr = await maxRateAccuracy(origin.uncapped, sha256);
    out.push(
      '',
      '### swift-fetch: resume and rate limit',
      '',
      '| measure | value |',
      '| --- | --- |',
      `| SIGKILL once 40 % is written (capped origin): origin bytes of the killed run | ${rw.atKill} (${((rw.atKill / size) * 100).toFixed(1)} %)${rw.killed ? '' : ' (NOT killed)'} |`,
      `| resumed run: origin bytes | ${rw.second} (${((rw.second / size) * 100).toFixed(1)} %) |`,
      `| resume waste (total − file) / file | ${(rw.waste * 100).toFixed(2)} % ${rw.ok ? '(verified)' : '(FAILED)'} |`,
      `| --max-rate ${args['max-rate']}: achieved, whole run | ${(mr.wall / MB).toFixed(1)} MB/s (${(((mr.wall - mr.target) / mr.target) * 100).toFixed(1)} %) |`,
      `| --max-rate ${args['max-rate']}: achieved, first to last byte | ${(mr.steady / MB).toFixed(1)} MB/s (${(((mr.steady - mr.target) / mr.target) * 100).toFixed(1)} %) |`,
    );
    const fl = await floors(origin.uncapped, file, sha256).catch((e) => ({ rows: [], error: String(e) }));
    out.push('', `### CPU floors (uncapped origin, ${args.size}; load ${loadavg()})`, '', '| work | time (s) | CPU s (user + sys) |', '| --- | ---: | ---: |');
    for (const r of fl.rows) out.push(`| ${r.label} | ${(r.ms / 1000).toFixed(1)} | ${fmtCpu(r.cpu)}${r.ok ? '' : ' FAILED ' + r.err} |`);
    if (fl.threads) {
      const t = fl.threads;
      out.push(
        '',
        `Engine CPU by thread (same run): main ${t.main} s (${t.mainUser} user + ${t.mainSys} sys), V8 platform threads (GC, compiler) ${t.v8Threads} s, libuv pool (file writes) ${t.fsPool} s, hash worker ${t.exitedThreads} s; total ${t.cpu} s, max RSS ${t.maxRssMB} MB.`,
      );
    }
  }
  if (!args['skip-mirror'] && tools.has('hf') && existsSync(hfBin)) {
    // The hub mirror (issue 11): `hf download` through a daemon, cold and warm, 1 and 4 clients.
    const mirror = await mirrorScenario(origin, origin.uncapped, { size, sha256, clients: [1, 4] });
    out.push('', mirrorTable('Hub mirror: `hf download` through a daemon vs from the origin (uncapped origin)', mirror));
  }
} finally {
  origin.stop();
}
const md = out.join('\n') + '\n';
mkdirSync(cache, { recursive: true });
writeFileSync(join(cache, 'results.md'), md);
process.stdout.write('\n' + md);
