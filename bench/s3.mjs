#!/usr/bin/env node
/**
 * s3:// pulls side by side on one local MinIO: `swift-fetch pull s3://...` (verified: SHA-256 of
 * every file against the objects' checksums) against `aws s3 cp --recursive` (AWS CLI) and a boto3
 * script (download_file per object, default TransferConfig), each into an empty folder.
 *
 *   npm run build && node bench/s3.mjs [--size 1GiB] [--files 4] [--runs 3] [--max-rate 40MB/s]
 *
 * MinIO comes from MINIO_BIN or the tool cache (.ci/install-minio.sh); the model is generated once
 * into .cache/bench/s3-model. Every tool reads the same objects, after one warm-up read, so all are
 * served from the page cache. Results: stdout (markdown) and .cache/bench/s3-results.md.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { parseRate, parseSize } from '../dist/core/units.js';
import { S3Client } from '../dist/s3/client.js';
import { s3Settings } from '../dist/s3/settings.js';
import { freePort } from './origins.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cache = join(root, '.cache/bench');
const { values: args } = parseArgs({
  options: { size: { type: 'string', default: '1GiB' }, files: { type: 'string', default: '4' }, runs: { type: 'string', default: '3' }, 'max-rate': { type: 'string', default: '40MB/s' } },
});
const size = parseSize(args.size);
const nFiles = Number(args.files);
const runs = Number(args.runs);
const MB = 1e6;
const TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

function which(cmd) {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

function modelFiles() {
  const dir = join(cache, `s3-model-${size}-${nFiles}`);
  mkdirSync(dir, { recursive: true });
  const per = Math.floor(size / nFiles);
  const out = [];
  for (let i = 0; i < nFiles; i++) {
    const name = `model-${String(i + 1).padStart(5, '0')}-of-${String(nFiles).padStart(5, '0')}.safetensors`;
    const file = join(dir, name);
    const len = i === nFiles - 1 ? size - per * (nFiles - 1) : per;
    if (!existsSync(file) || statSync(file).size !== len || !existsSync(`${file}.sha256`)) {
      process.stderr.write(`generating ${file} (once)\n`);
      const h = createHash('sha256');
      const fd = openSync(file, 'w');
      for (let off = 0; off < len; ) {
        const b = randomBytes(Math.min(16 << 20, len - off));
        h.update(b);
        writeSync(fd, b);
        off += b.length;
      }
      closeSync(fd);
      writeFileSync(`${file}.sha256`, h.digest('hex'));
    }
    out.push({ name, file, size: len, sha256: readFileSync(`${file}.sha256`, 'utf8').trim() });
  }
  return out;
}


async function startMinio() {
  const bin = process.env.MINIO_BIN ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'swift-fetch', 'bin', 'minio');
  if (!existsSync(bin)) throw new Error(`MinIO not found at ${bin}: MINIO_BIN=$(bash .ci/install-minio.sh)`);
  const data = mkdtempSync(join(tmpdir(), 'sf-bench-minio-'));
  const port = await freePort();
  const env = { PATH: process.env.PATH, HOME: data, MINIO_ROOT_USER: 'benchuser', MINIO_ROOT_PASSWORD: 'benchpassword123', MINIO_BROWSER: 'off', MINIO_UPDATE: 'off' };
  const child = spawn(bin, ['server', '--quiet', '--address', `127.0.0.1:${port}`, '--console-address', `127.0.0.1:${await freePort()}`, join(data, 'd')], { env, stdio: 'ignore' });
  const endpoint = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      const r = await request(`${endpoint}/minio/health/live`, { signal: AbortSignal.timeout(2000) });
      await r.body.dump();
      if (r.statusCode === 200) break;
    } catch {
      if (i > 300) throw new Error('minio did not start');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { endpoint, child, data, version: execFileSync(bin, ['--version'], { encoding: 'utf8' }).split('\n')[0] };
}

/** Run a command under /usr/bin/time: wall seconds, CPU seconds, peak RSS of the process tree's largest. */
function timed(cmd, argv, env, stdoutFile) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const full = TIME ? [TIME, ['-f', '%U %S %M', cmd, ...argv]] : [cmd, argv];
    const out = stdoutFile ? openSync(stdoutFile, 'w') : 'ignore';
    const child = spawn(full[0], full[1], { env: { ...process.env, ...env }, stdio: ['ignore', out, 'pipe'] });
    if (stdoutFile) closeSync(out);
    let err = '';
    child.stderr.on('data', (b) => (err += b));
    child.on('exit', (code) => {
      const secs = (performance.now() - t0) / 1000;
      const m = /(\d+\.\d+) (\d+\.\d+) (\d+)\s*$/.exec(err);
      resolve({ code, secs, user: m ? Number(m[1]) : NaN, sys: m ? Number(m[2]) : NaN, rssMB: m ? Number(m[3]) / 1024 : NaN, err: err.slice(-400) });
    });
  });
}

function checkTree(dir, files) {
  for (const f of files) {
    const got = createHash('sha256').update(readFileSync(join(dir, f.name))).digest('hex');
    if (got !== f.sha256) return `WRONG CONTENT in ${f.name}`;
  }
  return 'ok';
}

const BOTO3 = `
import sys, os, boto3
from boto3.s3.transfer import TransferConfig
s3 = boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL'])
bucket, prefix, out = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = TransferConfig()
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix + '/'):
    for o in page.get('Contents', []):
        s3.download_file(bucket, o['Key'], os.path.join(out, o['Key'][len(prefix) + 1:]), Config=cfg)
`;

async function main() {
  const files = modelFiles();
  const minio = await startMinio();
  const env = {
    AWS_ACCESS_KEY_ID: 'benchuser',
    AWS_SECRET_ACCESS_KEY: 'benchpassword123',
    AWS_ENDPOINT_URL: minio.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_EC2_METADATA_DISABLED: 'true',
  };
  const rows = [];
  const pushRows = [];
  let keep = '';
  try {
    const dispatcher = new Agent({ connections: 4, headersTimeout: 600_000, bodyTimeout: 600_000 });
    const client = new S3Client(s3Settings(env), dispatcher);
    await client.call({ method: 'PUT', bucket: 'bench', what: 'create bucket' });
    for (const f of files) {
      // One PUT each, with its SHA-256: the object keeps a whole-object checksum every tool can see.
      await client.put('bench', `model/${f.name}`, readFileSync(f.file), f.size, { sha256: Buffer.from(f.sha256, 'hex').toString('base64') });
    }
    await dispatcher.close();

    const aws = which('aws');
    // The project's venv (test/interop/requirements.txt pins boto3), else whatever python3 is on PATH.
    const venvPython = join(root, '.venv/bin/python');
    const canImport = (py) => {
      try {
        execFileSync(py, ['-c', 'import boto3'], { stdio: 'ignore' });
        return true;
      } catch {
        return false;
      }
    };
    const python = existsSync(venvPython) && canImport(venvPython) ? venvPython : which('python3');
    const hasBoto3 = python && canImport(python);
    const tools = [
      {
        name: 'swift-fetch pull s3://',
        note: 'sha256 verified against the objects\' checksums, published',
        run: (dir) => timed(process.execPath, [join(root, 'bin/swift-fetch.js'), 'pull', 's3://bench/model', '--store', join(dir, 'store'), '--state-dir', join(dir, 'state'), '-q'], env),
        tree: (dir) => readdirSync(join(dir, 'store/models/s3/bench/model')).map((c) => join(dir, 'store/models/s3/bench/model', c))[0],
      },
    ];
    if (aws) {
      const version = execFileSync(aws, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim() || 'aws';
      tools.push({ name: `aws s3 cp --recursive (${version.split(' ')[0]})`, note: 'AWS CLI defaults (10 threads, 8 MiB parts)', run: (dir) => timed(aws, ['s3', 'cp', '--recursive', '--quiet', 's3://bench/model/', dir], env), tree: (dir) => dir });
    }
    if (hasBoto3) {
      const version = execFileSync(python, ['-c', 'import boto3; print(boto3.__version__)'], { encoding: 'utf8' }).trim();
      tools.push({ name: `boto3 ${version} download_file per object`, note: 'TransferConfig defaults (10 threads, 8 MiB parts)', run: (dir) => timed(python, ['-c', BOTO3, 'bench', 'model', dir], env), tree: (dir) => dir });
    }
    // Warm the server's page cache once, so no tool pays for the first read from disk.
    {
      const dir = mkdtempSync(join(tmpdir(), 'sf-bench-s3-'));
      await tools[0].run(dir);
      rmSync(dir, { recursive: true, force: true });
    }
    // Rounds interleave the tools, so a burst of load elsewhere on the machine hits them alike.
    const results = tools.map(() => []);
    for (let i = 0; i < runs; i++) {
      for (const [k, t] of tools.entries()) {
        const dir = mkdtempSync(join(tmpdir(), 'sf-bench-s3-'));
        const load = loadavg();
        const r = await t.run(dir);
        const verdict = r.code === 0 ? checkTree(t.tree(dir), files) : `exit ${r.code}: ${r.err}`;
        results[k].push({ ...r, load, verdict });
        process.stderr.write(`${t.name}: ${r.secs.toFixed(2)} s (load ${load})\n`);
        if (k === 0 && i === runs - 1) keep = dir;
        else rmSync(dir, { recursive: true, force: true });
      }
    }
    for (const [k, t] of tools.entries()) {
      const rs = [...results[k]].sort((a, b) => a.secs - b.secs);
      const med = rs[Math.floor(rs.length / 2)];
      rows.push({ tool: t.name, note: t.note, ...med, all: results[k].map((r) => r.secs.toFixed(2)).join(', ') });
    }
    // Uploads: swift-fetch push from the store the last pull filled, uncapped and with --max-rate,
    // against aws s3 cp --recursive from a plain folder with the same files.
    const store = ['--store', join(keep, 'store'), '--state-dir', join(keep, 'state')];
    const push = (dest, extra = ['-q'], stdout) => timed(process.execPath, [join(root, 'bin/swift-fetch.js'), 'push', 's3://bench/model', dest, ...store, ...extra], env, stdout);
    for (let i = 0; i < runs; i++) {
      const r = await push(`s3://bench/push-${i}`);
      pushRows.push({ tool: 'swift-fetch push (new prefix)', ...r, load: loadavg() });
      if (aws) pushRows.push({ tool: 'aws s3 cp --recursive (upload)', ...(await timed(aws, ['s3', 'cp', '--recursive', '--quiet', dirname(files[0].file), `s3://bench/aws-up-${i}/`, '--exclude', '*.sha256'], env)), load: loadavg() });
    }
    const again = await push('s3://bench/push-0');
    pushRows.push({ tool: 'swift-fetch push again (nothing to move)', ...again, load: loadavg() });
    // The rate from the first progress event (the first MiB read into a request body) to the end,
    // from the --json event times (startup, listing and hashing ahead of the first part are not the
    // limiter's business), and for the whole run.
    const cappedOut = join(keep, 'capped.ndjson');
    const capped = await push('s3://bench/push-capped', ['--max-rate', args['max-rate'], '--json'], cappedOut);
    const ev = readFileSync(cappedOut, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const first = ev.find((e) => e.type === 'progress');
    const t1 = Date.parse(ev.find((e) => e.type === 'pushed').time);
    const steady = (size - first.bytesDone) / ((t1 - Date.parse(first.time)) / 1000);
    pushRows.push({ tool: `swift-fetch push --max-rate ${args['max-rate']}`, ...capped, load: loadavg(), achieved: size / capped.secs, steady });
    rmSync(keep, { recursive: true, force: true });
  } finally {
    minio.child.kill('SIGKILL');
    rmSync(minio.data, { recursive: true, force: true });
  }
  const base = rows.find((r) => r.tool.startsWith('aws'))?.secs;
  const lines = [
    `### s3:// pull vs AWS CLI and boto3 (${(size / MB).toFixed(0)} MB in ${nFiles} objects, one local MinIO, median of ${runs})`,
    '',
    `${minio.version}; command: \`npm run build && node bench/s3.mjs --size ${args.size} --files ${nFiles} --runs ${runs} --max-rate ${args['max-rate']}\``,
    '',
    '| tool | time (s), median | runs (s) | MB/s | vs aws | CPU s (user + sys) | peak RSS (MB) | load | result |',
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${r.tool} | ${r.secs.toFixed(2)} | ${r.all} | ${(size / MB / r.secs).toFixed(0)} | ${base ? (r.secs / base).toFixed(2) : '-'} | ${(r.user + r.sys).toFixed(1)} (${r.user.toFixed(1)} + ${r.sys.toFixed(1)}) | ${r.rssMB.toFixed(0)} | ${r.load} | ${r.verdict}: ${r.note} |`,
    ),
    '',
    `Uploads of the same ${(size / MB).toFixed(0)} MB (each run to a new prefix; swift-fetch push reads the store the last pull filled, aws a plain folder):`,
    '',
    '| upload | time (s) | MB/s | CPU s (user + sys) | peak RSS (MB) | load | result |',
    '| --- | ---: | ---: | ---: | ---: | --- | --- |',
    ...pushRows.map(
      (r) =>
        `| ${r.tool} | ${r.secs.toFixed(2)} | ${(size / MB / r.secs).toFixed(0)} | ${(r.user + r.sys).toFixed(1)} (${r.user.toFixed(1)} + ${r.sys.toFixed(1)}) | ${r.rssMB.toFixed(0)} | ${r.load} | ${r.code === 0 ? 'ok' : `exit ${r.code}`}${r.achieved ? `: ${pct(r.steady)} from the first progress event to the end, ${pct(r.achieved)} whole run (process start, listing and manifest included)` : ''} |`,
    ),
    '',
  ];
  const md = lines.join('\n');
  function pct(bps) {
    const limit = parseRate(args['max-rate']);
    return `${(bps / MB).toFixed(1)} MB/s (${(((bps - limit) / limit) * 100).toFixed(1)} %)`;
  }
  process.stdout.write(md + '\n');
  mkdirSync(cache, { recursive: true });
  writeFileSync(join(cache, 's3-results.md'), md);
}

await main();
