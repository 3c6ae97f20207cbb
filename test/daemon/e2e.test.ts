/**
 * The daemon with the real pull path against the fake hub: reconcile from config and a models
 * file, several processes pulling one model into one store, GC under a quota.
 */
import { existsSync } from 'node:fs';
import { copyFile, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createBundleFile } from '../../src/bundle/create.js';
import { parseRef } from '../../src/core/ref.js';
import { parseConfig } from '../../src/daemon/config.js';
import { pullModel } from '../../src/pull/index.js';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { Store } from '../../src/store/store.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { DaemonClient } from '../../src/daemon/client.js';
import { runCli } from '../support/index.js';
import { parsePrometheus, spawnNode, tempDir, until, type Child } from './helpers.js';

const log = pino({ level: 'silent' });

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

let hub: FakeHub;
const repos: Record<string, AddedRepo> = {};
const content: Record<string, Record<string, Buffer>> = {};
let dir: string;
let cleanup: () => Promise<void>;
const daemons: Daemon[] = [];
const children: Child[] = [];

beforeAll(async () => {
  hub = await startFakeHub();
  const specs: Record<string, number> = { 'org/alpha': 1, 'org/beta': 2, 'org/gamma': 3, 'org/shared': 4 };
  for (const [id, seed] of Object.entries(specs)) {
    content[id] = {
      'config.json': Buffer.from(JSON.stringify({ model_type: 'llama', id })),
      'tokenizer.json': Buffer.from(JSON.stringify({ vocab: id })),
      'model.safetensors': bytes(id === 'org/shared' ? 4 * 1024 * 1024 : 1024 * 1024 + seed, seed),
    };
    repos[id] = await hub.addRepo({ id, files: content[id]! });
  }
});
afterAll(() => hub.close());
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('sf-e2e-'));
  hub.resetStats();
});
afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  for (const c of children.splice(0)) {
    if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    await c.exited;
  }
  hub.perConnectionRate = undefined;
  await cleanup();
});

const hubEnv = () => ({ HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: '', MODELSCOPE_API_TOKEN: '' });

async function daemon(yaml: string, name = 'd1', env: Record<string, string> = hubEnv()): Promise<Daemon> {
  const file = join(dir, `${name}.yaml`);
  await writeFile(file, `listen: 127.0.0.1:0\nstore: ${join(dir, 'store')}\nstateDir: ${join(dir, `state-${name}`)}\n${yaml}`);
  const cfg = parseConfig(await readFile(file, 'utf8'), file);
  const d = await startDaemon(cfg, { logger: log, env: { ...process.env, ...env }, resyncMs: 0, gcSweepGraceMs: 0, watch: { debounceMs: 50, pollMs: 0 }, storeSyncMs: 100 });
  daemons.push(d);
  return d;
}

const ready = (d: Daemon, key: string) => until(() => (d.reconciler.get(key)?.state === 'ready' ? d.reconciler.get(key) : undefined), 50);
const repoSize = (id: string) => Object.values(content[id]!).reduce((n, b) => n + b.length, 0);

describe('daemon end to end (fake hub, real pulls)', () => {
  it('reconciles models from the config and the models file into a complete, verified store', async () => {
    const modelsFile = join(dir, 'models.yaml');
    await writeFile(modelsFile, '- ms://org/beta\n');
    const d = await daemon(`modelsFile: ${modelsFile}\nmodels: [ "hf://org/alpha", {ref: "ms://org/gamma", include: ["*.json"]} ]\n`);
    const alpha = await ready(d, 'hf://org/alpha@main');
    const beta = await ready(d, 'ms://org/beta@master');
    const gamma = await ready(d, 'ms://org/gamma@master');
    expect(alpha).toMatchObject({ commit: repos['org/alpha']!.commit, bytesDone: repoSize('org/alpha'), bytesTotal: repoSize('org/alpha'), error: null });
    for (const [f, b] of Object.entries(content['org/alpha']!)) expect((await readFile(join(alpha.path!, f))).equals(b)).toBe(true);
    expect((await readFile(join(beta.path!, 'model.safetensors'))).equals(content['org/beta']!['model.safetensors']!)).toBe(true);
    // The include filter of the declaration was honoured.
    expect(existsSync(join(gamma.path!, 'config.json'))).toBe(true);
    expect(existsSync(join(gamma.path!, 'model.safetensors'))).toBe(false);

    // Editing the models file adds a model without a restart…
    await writeFile(modelsFile, '- ms://org/beta\n- hf://org/shared\n');
    await ready(d, 'hf://org/shared@main');
    // …and removing one unpins it (it stays in the store).
    await writeFile(modelsFile, '- hf://org/shared\n');
    await until(() => d.reconciler.get('ms://org/beta@master') === undefined, 50);
    expect(existsSync(join(beta.path!, 'model.safetensors'))).toBe(true);
  }, 120_000);

  it('4 concurrent pullers of one model (2 daemons, 2 CLI processes) cost about one origin copy, and all succeed', async () => {
    hub.perConnectionRate = 512 * 1024; // long enough that everyone overlaps with the download
    const barrier = join(dir, 'go');
    const store = join(dir, 'store');
    const clis = [1, 2].map((i) => {
      const c = spawnNode(['test/daemon/fixtures/pull-once.ts', 'hf://org/shared', store, join(dir, `state-cli${i}`), barrier], { env: hubEnv() });
      children.push(c);
      return c;
    });
    await Promise.all(clis.map((c) => c.waitLine((l) => l === 'ready')));
    const d1 = await daemon('models: [hf://org/shared]\n', 'd1');
    const d2 = await daemon('models: [hf://org/shared]\n', 'd2');
    // Release the CLIs while the daemons are mid-pull.
    await until(() => [d1, d2].every((d) => d.reconciler.get('hf://org/shared@main')?.state === 'downloading'), 20);
    await writeFile(barrier, '');
    const s1 = await ready(d1, 'hf://org/shared@main');
    const s2 = await ready(d2, 'hf://org/shared@main');
    const results = await Promise.all(clis.map(async (c) => JSON.parse(await c.waitLine((l) => l.startsWith('{"result"') || l.startsWith('{"error"'))) as { result?: { path: string; commit: string }; error?: string }));
    for (const r of results) expect(r.error).toBeUndefined();
    for (const c of clis) expect((await c.exited).code).toBe(0);
    const commit = repos['org/shared']!.commit;
    expect([s1.commit, s2.commit, ...results.map((r) => r.result!.commit)]).toEqual([commit, commit, commit, commit]);
    expect(new Set([s1.path, s2.path, ...results.map((r) => r.result!.path)]).size).toBe(1);
    expect((await readFile(join(s1.path!, 'model.safetensors'))).equals(content['org/shared']!['model.safetensors']!)).toBe(true);
    // Someone waited for another's download instead of fetching its own copy.
    const waited = clis.some((c) => c.lines.some((l) => l.includes('"type":"waiting"')));
    expect(waited).toBe(true);
    const origin = hub.bytesSent();
    expect(origin).toBeGreaterThanOrEqual(repoSize('org/shared'));
    expect(origin).toBeLessThanOrEqual(1.1 * repoSize('org/shared'));
  }, 120_000);

  it('GC under a quota evicts least recently used on-demand models, never a declared one', async () => {
    const modelsFile = join(dir, 'models.yaml');
    await writeFile(modelsFile, '- hf://org/gamma\n');
    // Quota: room for the declared models and the newest on-demand one, not for all four.
    const quota = repoSize('org/alpha') + repoSize('org/gamma') + repoSize('org/shared') + 1000;
    const d = await daemon(`modelsFile: ${modelsFile}\nmodels: [hf://org/alpha]\ngc: { maxBytes: ${quota} }\n`);
    await ready(d, 'hf://org/alpha@main');
    await ready(d, 'hf://org/gamma@main');
    const post = (ref: string) => fetch(`${d.url}/v1/pulls`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ref }) });
    expect((await post('hf://org/beta')).status).toBe(202);
    await ready(d, 'hf://org/beta@main');
    expect((await post('hf://org/shared')).status).toBe(202);
    await ready(d, 'hf://org/shared@main');

    const store = new Store(join(dir, 'store'));
    const names = async () => (await store.listRecords()).map((r) => r.name).sort();
    // Over quota now: beta (least recently used, unpinned) must go; shared is the newest.
    const res = await d.collectGarbage();
    expect(res?.ran).toBe(true);
    expect(await names()).toEqual(['alpha', 'gamma', 'shared'].sort());
    expect(res!.evicted.map((e) => e.ref)).toEqual(['hf://org/beta']);

    // With a quota nothing can meet, everything unpinned goes and the declared ones stay intact.
    d.config.gc.maxBytes = 1;
    const res2 = await d.collectGarbage();
    expect(res2!.overQuota).toBe(true);
    expect(await names()).toEqual(['alpha', 'gamma']);
    const alpha = d.reconciler.get('hf://org/alpha@main')!;
    for (const [f, b] of Object.entries(content['org/alpha']!)) expect((await readFile(join(alpha.path!, f))).equals(b)).toBe(true);

    // Removing gamma from the models file unpins it: the next collection may evict it.
    await writeFile(modelsFile, '[]\n');
    await until(() => d.reconciler.get('hf://org/gamma@main') === undefined, 50);
    await d.collectGarbage();
    expect(await names()).toEqual(['alpha']);
    expect(existsSync(join(alpha.path!, 'model.safetensors'))).toBe(true);
  }, 120_000);

  it('without a network, a bundle dropped into `imports` satisfies a declared model', async () => {
    // Make the bundle on the "connected" side.
    const src = join(dir, 'src-store');
    await pullModel('hf://org/alpha', { store: src, stateDir: join(dir, 'src-state'), env: { ...process.env, ...hubEnv() } });
    const bundle = join(dir, 'alpha.tar');
    await createBundleFile([parseRef('hf://org/alpha')], bundle, { store: src, stateDir: join(dir, 'src-state') });

    // The air-gapped daemon: its hub address refuses connections.
    const imports = join(dir, 'imports');
    const offline = { HF_ENDPOINT: 'http://127.0.0.1:9', MODELSCOPE_ENDPOINT: 'http://127.0.0.1:9', HF_TOKEN: '', MODELSCOPE_API_TOKEN: '' };
    const d = await daemon(`imports: ${imports}\nmodels: [hf://org/alpha]\n`, 'gap', offline);
    await until(() => d.reconciler.get('hf://org/alpha@main')?.state === 'failed', 100);
    expect(d.reconciler.get('hf://org/alpha@main')!.error).toBeTruthy();

    await copyFile(bundle, join(imports, '.alpha.tar.part'));
    await rename(join(imports, '.alpha.tar.part'), join(imports, 'alpha.tar'));
    const s = await ready(d, 'hf://org/alpha@main');
    expect(s.commit).toBe(repos['org/alpha']!.commit);
    expect((await readFile(join(s.path!, 'model.safetensors'))).equals(content['org/alpha']!['model.safetensors']!)).toBe(true);
  }, 120_000);
});

describe("the daemon's view follows the store", () => {
  it('a model removed with swift-fetch rm is pulled again when declared, and no longer listed when not', async () => {
    const d = await daemon('models: [hf://org/alpha]\n');
    const alpha = await ready(d, 'hf://org/alpha@main');
    const client = new DaemonClient(d.url);
    try {
      await client.pull({ ref: 'hf://org/beta' });
      await ready(d, 'hf://org/beta@main');
      hub.resetStats();
      for (const ref of ['hf://org/alpha', 'hf://org/beta']) {
        const rm = await runCli(['rm', ref, '--store', join(dir, 'store')]);
        expect(rm.code, rm.stderr).toBe(0);
      }
      await until(async () => (await client.models()).every((m) => m.ref !== 'hf://org/beta@main'), 50);
      // The declared one comes back: fetched again from the hub, published at the same path.
      const again = await until(async () => {
        const m = await client.model('hf://org/alpha@main');
        return m?.state === 'ready' && existsSync(join(m.path!, 'model.safetensors')) ? m : undefined;
      }, 50);
      expect(again.path).toBe(alpha.path);
      expect(hub.bytesSent({ path: 'model.safetensors' })).toBeGreaterThanOrEqual(content['org/alpha']!['model.safetensors']!.length);
      expect((await readFile(join(again.path!, 'model.safetensors'))).equals(content['org/alpha']!['model.safetensors']!)).toBe(true);
    } finally {
      await client.close();
    }
  }, 120_000);

  it('a store that vanished altogether (an unmounted volume) is not taken for removed models', async () => {
    const d = await daemon('models: [hf://org/alpha]\n');
    const alpha = await ready(d, 'hf://org/alpha@main');
    hub.resetStats();
    await rename(join(dir, 'store'), join(dir, 'store-away'));
    await new Promise((r) => setTimeout(r, 500)); // five looks at the store
    expect(d.reconciler.get('hf://org/alpha@main')).toMatchObject({ state: 'ready', commit: alpha.commit });
    expect(hub.log).toEqual([]);
    expect(existsSync(join(dir, 'store'))).toBe(false);
    await rename(join(dir, 'store-away'), join(dir, 'store'));
  }, 60_000);

  it('after a restart, a model the store holds is ready even when the hub now answers 404', async () => {
    const first = await daemon('models: [hf://org/alpha]\n');
    const was = await ready(first, 'hf://org/alpha@main');
    await daemons.splice(0).pop()!.stop();
    // A hub that knows no repo: with a token, every lookup is a 404 RepoNotFound, as the real one answers.
    const gone = await startFakeHub();
    try {
      const d = await daemon('models: [hf://org/alpha]\n', 'd1', { HF_ENDPOINT: gone.hfEndpoint, MODELSCOPE_ENDPOINT: gone.msEndpoint, HF_TOKEN: 'hf_some_token', MODELSCOPE_API_TOKEN: '' });
      const now = await until(() => {
        const m = d.reconciler.get('hf://org/alpha@main');
        return m && m.state !== 'pending' && m.state !== 'downloading' ? m : undefined;
      }, 50);
      expect(now).toMatchObject({ state: 'ready', commit: was.commit, path: was.path, error: null });
      expect(gone.log.length).toBeGreaterThan(0);
      expect(gone.log.every((e) => e.status === 404)).toBe(true);
    } finally {
      await gone.close();
    }
  }, 120_000);

  it('a bundle import shows in /v1/models: by the CLI into its store, or dropped into imports/', async () => {
    const src = join(dir, 'src-store');
    const bundles: Record<string, string> = {};
    for (const id of ['org/alpha', 'org/beta']) {
      await pullModel(`hf://${id}`, { store: src, stateDir: join(dir, 'src-state'), env: { ...process.env, ...hubEnv() } });
      bundles[id] = join(dir, `${id.split('/')[1]}.tar`);
      await createBundleFile([parseRef(`hf://${id}`)], bundles[id]!, { store: src, stateDir: join(dir, 'src-state') });
    }
    const imports = join(dir, 'imports');
    const offline = { HF_ENDPOINT: 'http://127.0.0.1:9', MODELSCOPE_ENDPOINT: 'http://127.0.0.1:9', HF_TOKEN: '', MODELSCOPE_API_TOKEN: '' };
    const d = await daemon(`imports: ${imports}\nmodels: [hf://org/alpha]\n`, 'gap', offline);
    await until(() => d.reconciler.get('hf://org/alpha@main')?.state === 'failed', 50);
    const client = new DaemonClient(d.url);
    try {
      // By hand, into the daemon's store: the declared model becomes ready without waiting for a retry.
      const cli = await runCli(['bundle', 'import', bundles['org/alpha']!, '--store', join(dir, 'store')], { env: offline });
      expect(cli.code, cli.stderr).toBe(0);
      const alpha = await until(async () => {
        const m = await client.model('hf://org/alpha@main');
        return m?.state === 'ready' ? m : undefined;
      }, 50);
      expect(alpha).toMatchObject({ commit: repos['org/alpha']!.commit, error: null, bytesTotal: repoSize('org/alpha') });
      // Dropped into imports/: a model nobody declared is listed, ready, as soon as it is imported.
      await copyFile(bundles['org/beta']!, join(imports, '.beta.tar.part'));
      await rename(join(imports, '.beta.tar.part'), join(imports, 'beta.tar'));
      const beta = await until(async () => (await client.models()).find((m) => m.ref === 'hf://org/beta@main'), 50);
      expect(beta).toMatchObject({ state: 'ready', declared: false, commit: repos['org/beta']!.commit });
      expect((await readFile(join(beta.path!, 'model.safetensors'))).equals(content['org/beta']!['model.safetensors']!)).toBe(true);
    } finally {
      await client.close();
    }
  }, 120_000);

  it('swift_fetch_bytes_received_total counts each origin byte once, however many pulls waited on it', async () => {
    hub.perConnectionRate = 1024 * 1024; // the two pulls overlap: one fetches, the other waits for its blob
    const d = await daemon('models: [hf://org/shared, ms://org/shared]\n');
    await ready(d, 'hf://org/shared@main');
    await ready(d, 'ms://org/shared@master');
    const samples = parsePrometheus(await d.metrics.text());
    const origin = samples.find((x) => x.name === 'swift_fetch_bytes_received_total' && x.labels.source === 'origin')!.value;
    const weights = content['org/shared']!['model.safetensors']!.length;
    // The scenario holds: the weights crossed the wire about once, for two pulls.
    expect(hub.bytesSent({ path: 'model.safetensors' })).toBeLessThan(1.5 * weights);
    expect(origin).toBeGreaterThanOrEqual(weights);
    // Never more than the origin actually sent (counting it per waiting pull made it about twice that).
    expect(origin).toBeLessThanOrEqual(hub.bytesSent());
  }, 120_000);
});
