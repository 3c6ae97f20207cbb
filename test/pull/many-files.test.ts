/**
 * Repos with many files (issue 12 item 6), for correctness at scale: a real pull process of a
 * 5,000-file revision from the fake hub, SIGKILLed and SIGTERMed halfway. Speed and memory are
 * benchmark figures (bench/many-files.mjs, docs/benchmarks.md); here only bounds that say the
 * design holds: descriptors do not grow with the file count, verified blobs are committed as they
 * verify and survive a SIGKILL, and SIGTERM is honoured promptly.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pullModel } from '../../src/pull/index.js';
import { spawnNode, type Child } from '../daemon/helpers.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { tmpDir } from '../support/index.js';

const FILES = 5_000;
let hub: FakeHub;
let files: Record<string, Buffer>;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  hub = await startFakeHub();
  files = {};
  for (let i = 0; i < FILES; i++) files[`data/${String(i % 50).padStart(2, '0')}/f${i}.json`] = randomBytes(512 + (i % 7) * 100);
  await hub.addRepo({ id: 'many/five-k', files });
  env = { ...process.env, HF_ENDPOINT: hub.hfEndpoint, HF_TOKEN: '', HTTPS_PROXY: '', HTTP_PROXY: '', NO_PROXY: '' };
}, 120_000);
afterAll(async () => hub?.close());

/** CLI processes started by a test: a test that fails or times out must not leave one running. */
const live: Child[] = [];
afterEach(async () => {
  for (const c of live.splice(0)) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Every file in the blob store, checked against its name (the store's address is its SHA-256). */
async function storedBlobs(store: string): Promise<string[]> {
  const root = join(store, '.swift-fetch', 'blobs');
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else {
        const name = e.name.replace(/^.*[-/]/, '');
        expect(sha(await fsp.readFile(join(d, e.name)))).toBe(name);
        out.push(name);
      }
    }
  };
  await walk(root);
  return out;
}

function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** The CLI pulling the repo; resolves once `stopAfter` files verified, with the peak fd count seen. */
async function cliUntil(store: string, stateDir: string, stopAfter: number): Promise<{ child: Child; verified: () => number; peakFds: () => number }> {
  const child = spawnNode(['test/pull/fixtures/cli.ts', 'pull', 'hf://many/five-k', '--store', store, '--state-dir', stateDir, '--json', '--connections', '16'], { env });
  live.push(child);
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, fdCount(child.proc.pid!))), 50);
  void child.exited.then(() => clearInterval(sampler));
  let count = 0;
  await child.waitLine((l) => l.includes('"file-verified"') && ++count >= stopAfter, `${stopAfter} files verified`);
  const verified = () => child.lines.filter((l) => l.includes('"file-verified"')).length;
  return { child, verified, peakFds: () => peak };
}

describe(`a revision of ${FILES} small files`, () => {
  it('SIGKILL halfway keeps every verified blob; the rerun fetches only the rest; fds stay bounded', async () => {
    const dir = await tmpDir();
    const store = join(dir, 'store');
    const stateDir = join(dir, 'state');
    const run = await cliUntil(store, stateDir, FILES / 2);
    run.child.proc.kill('SIGKILL');
    await run.child.exited;
    const seen = run.verified();
    // Descriptors did not grow with the files (the old code held one per blob lease heartbeat).
    expect(run.peakFds()).toBeGreaterThan(0);
    expect(run.peakFds()).toBeLessThan(300);
    // Committed as they verified: at most the blobs between their verification and their commit
    // (one per connection) are missing, and nothing unverified was stored.
    const kept = await storedBlobs(store);
    expect(kept.length).toBeGreaterThanOrEqual(seen - 16);
    expect(kept.length).toBeLessThan(FILES);
    const wanted = new Set(Object.values(files).map(sha));
    for (const k of kept) expect(wanted.has(k)).toBe(true);

    // The rerun (this process) starts at once (the dead holder's claims are free) and asks the
    // hub only for what is missing.
    hub.resetStats();
    const res = await pullModel('hf://many/five-k', { store, stateDir, env, connections: 16 });
    const fileGets = hub.log.filter((e) => e.method === 'GET' && e.url.includes('/resolve/')).length;
    expect(fileGets).toBeLessThanOrEqual(FILES - kept.length + 16);
    expect(fileGets).toBeGreaterThan(0);
    for (const [p, b] of Object.entries(files).filter((_, i) => i % 97 === 0)) expect(sha(await fsp.readFile(join(res.path, p)))).toBe(sha(b));
    expect((await storedBlobs(store)).length).toBe(FILES);
    // No claim, lease or pin left behind by either run.
    expect((await fsp.readdir(join(store, '.swift-fetch', 'leases'))).filter((f) => f.endsWith('.lease'))).toEqual([]);
  }, 300_000);

  it('SIGTERM halfway: the CLI exits 143 within 5 s, leaving its committed blobs and no lease', async () => {
    const dir = await tmpDir();
    const store = join(dir, 'store');
    const run = await cliUntil(store, join(dir, 'state'), FILES / 2);
    const sent = Date.now();
    run.child.proc.kill('SIGTERM');
    const { code } = await run.child.exited;
    expect(Date.now() - sent).toBeLessThan(5_000);
    expect(code).toBe(143);
    expect((await storedBlobs(store)).length).toBeGreaterThanOrEqual(run.verified() - 16);
    expect((await fsp.readdir(join(store, '.swift-fetch', 'leases'))).filter((f) => f.endsWith('.lease'))).toEqual([]);
    expect(await fsp.readdir(join(store, 'models')).catch(() => [])).toEqual([]);
  }, 300_000);
});
