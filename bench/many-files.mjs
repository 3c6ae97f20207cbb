#!/usr/bin/env node
/**
 * Repos with many small files (issue 12 item 6): `swift-fetch pull` of a generated repo with N
 * files from the fake hub (a separate process), sampling the pull's open descriptors and RSS.
 *
 *   npm run build && node bench/many-files.mjs [--files 2000,20000] [--size 2048] [--connections 24]
 *        [--kill-at 0.5] [--term-at 0.5]
 *
 * --kill-at F: SIGKILL the pull once F of the files are verified, then count what the store kept
 *   (blobs committed as they verified survive) and time a second pull that finishes the job.
 * --term-at F: SIGTERM once F of the files are verified and time how long the process takes to exit.
 * Files are unique (a few KiB of seeded random bytes each), spread over 100 folders, small enough
 * that the hub serves them itself with only a git blob id (like config, tokenizer and code files).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadavg } from './common.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: args } = parseArgs({
  options: {
    files: { type: 'string', default: '2000,20000' },
    size: { type: 'string', default: '2048' },
    connections: { type: 'string', default: '24' },
    'kill-at': { type: 'string' },
    'term-at': { type: 'string' },
    'keep': { type: 'boolean', default: false },
  },
});
const counts = args.files.split(',').map(Number);
const fileSize = Number(args.size);

/** The hub root for `n` files: `<dir>/many-<n>/bench/many-<n>/` (its own root, so the hub hashes only it). */
function makeRepo(dir, n) {
  const repo = join(dir, `many-${n}`, 'bench', `many-${n}`);
  const stamp = join(dir, `many-${n}`, '.done');
  if (existsSync(stamp)) return repo;
  rmSync(repo, { recursive: true, force: true });
  for (let i = 0; i < n; i++) {
    const sub = join(repo, 'data', String(i % 100).padStart(3, '0'));
    if (i < 100) mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, `f${String(i).padStart(6, '0')}.json`), randomBytes(fileSize));
  }
  writeFileSync(stamp, '');
  return repo;
}

async function startHub(dir) {
  const child = spawn(join(root, 'node_modules/.bin/tsx'), [join(root, 'test/fakehub/main.ts'), '--root', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const env = {};
  const rl = createInterface({ input: child.stdout });
  for await (const line of rl) {
    const [k, v] = line.split('=');
    env[k] = line.slice(k.length + 1);
    void v;
    if (k === 'MODELSCOPE_ENDPOINT') break;
  }
  return { env, stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGTERM'); }) };
}

const fdCount = (pid) => { try { return readdirSync(`/proc/${pid}/fd`).length; } catch { return 0; } };
const rssMb = (pid) => {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch { return 0; }
};
const countBlobs = (store) => {
  const dir = join(store, '.swift-fetch', 'blobs');
  let n = 0;
  const walk = (d) => { for (const e of readdirSync(d, { withFileTypes: true })) e.isDirectory() ? walk(join(d, e.name)) : n++; };
  try { walk(dir); } catch {}
  return n;
};

/** One pull; resolves with time, peak fds / RSS, exit code, and when asked the signal timing. */
function pull(env, ref, store, stateDir, n, { killAt, termAt } = {}) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [join(root, 'bin/swift-fetch.js'), 'pull', ref, '--store', store, '--connections', args.connections, '--json'], {
      env: { ...process.env, ...env, SWIFT_FETCH_STATE_DIR: stateDir, HF_HUB_DISABLE_TELEMETRY: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let verified = 0;
    let signalled;
    let signalSent;
    let stderr = '';
    child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.includes('file-verified')) return;
      verified++;
      const at = killAt ?? termAt;
      if (at !== undefined && !signalled && verified >= at * n) {
        signalled = killAt !== undefined ? 'SIGKILL' : 'SIGTERM';
        signalSent = performance.now();
        child.kill(signalled);
      }
    });
    let peakFd = 0;
    let peakRss = 0;
    const sampler = setInterval(() => {
      peakFd = Math.max(peakFd, fdCount(child.pid));
      peakRss = Math.max(peakRss, rssMb(child.pid));
    }, 100);
    child.on('exit', (code, sig) => {
      clearInterval(sampler);
      const t1 = performance.now();
      resolve({ seconds: (t1 - t0) / 1000, code: code ?? sig, peakFd, peakRss, verified, signalled, exitAfterSignalMs: signalSent ? t1 - signalSent : undefined, stderr });
    });
  });
}

const work = mkdtempSync(join(tmpdir(), 'sf-many-'));
const data = join(root, '.cache', 'bench', 'many');
mkdirSync(data, { recursive: true });
const rows = [];
for (const n of counts) {
  makeRepo(data, n);
  process.stderr.write(`starting the fake hub (hashes ${n} files once)...\n`);
  const hub = await startHub(join(data, `many-${n}`));
  try {
    const store = join(work, `store-${n}`);
    const state = join(work, `state-${n}`);
    const ref = `hf://bench/many-${n}`;
    const load = loadavg();
    const r = await pull(hub.env, ref, store, state, n, { killAt: args['kill-at'] && Number(args['kill-at']), termAt: args['term-at'] && Number(args['term-at']) });
    const row = { files: n, ...r, load, blobsAfter: countBlobs(store) };
    delete row.stderr;
    if (r.signalled === 'SIGKILL') {
      const again = await pull(hub.env, ref, store, state, n);
      row.rerun = { seconds: again.seconds, code: again.code, verified: again.verified, peakFd: again.peakFd, peakRss: again.peakRss };
    }
    if (r.code !== 0 && !r.signalled) process.stderr.write(r.stderr + '\n');
    rows.push(row);
    console.log(JSON.stringify(row));
  } finally {
    await hub.stop();
  }
}
if (!args.keep) rmSync(work, { recursive: true, force: true });
console.log('\n| files | time (s) | files/s | exit | peak open fds | peak RSS (MB) | load |');
console.log('| ---: | ---: | ---: | --- | ---: | ---: | --- |');
for (const r of rows) console.log(`| ${r.files} | ${r.seconds.toFixed(1)} | ${(r.verified / r.seconds).toFixed(0)} | ${r.code} | ${r.peakFd} | ${r.peakRss.toFixed(0)} | ${r.load} |`);
