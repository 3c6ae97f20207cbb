/**
 * Daemons with kubernetes.enabled against a real API server and the fake hub: three daemons (three
 * node names, one store each) pull ModelCaches, each reports its own node's status entry, labels its
 * Node once the model is re-hashed in its store, removes the label when the model goes, and turns
 * failures into Events. The daemons authenticate as the chart's ServiceAccount with the chart's RBAC,
 * so the RBAC is exercised by the real behaviour; a daemon whose RBAC lacks a verb keeps pulling and
 * says what it lacks.
 */
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRef } from '../../src/core/ref.js';
import { parseConfig } from '../../src/daemon/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { Store } from '../../src/store/store.js';
import { chartDir } from '../chart/support.js';
import { until } from '../daemon/helpers.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { kubeSuiteRuns, startKubeCluster, type KubeCluster } from '../support/kube.js';
import { run } from '../support/spawn.js';
import { mountTmpfs, tmpDir } from '../support/tmp.js';
import { makeContent } from '../transfer/helpers.js';

const NS = 'models';
const SA = 'sf-swift-fetch';
const NODES = { n1: { gpu: 'a100' }, n2: { gpu: 'a100' }, n3: { gpu: 't4' } } as const;

let k: KubeCluster;
let hub: FakeHub;
let dir: string;
const repos: Record<string, AddedRepo> = {};
interface Running {
  d: Daemon;
  logs: Record<string, unknown>[];
  store: string;
}
const daemons = new Map<string, Running>();

function capture(): { logger: Logger; logs: Record<string, unknown>[] } {
  const logs: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, logs };
}

/** The placement label, computed by sha256sum rather than by the code under test. */
async function labelFor(canonicalRef: string): Promise<string> {
  const r = await run('sh', ['-c', 'printf %s "$1" | sha256sum', 'sh', canonicalRef]);
  return `models.swift-fetch.io/${r.stdout.slice(0, 16)}`;
}

/** A daemon as node `node`, authenticated by `kubeconfig`; `extra` is more config YAML. */
async function startNode(node: string, kubeconfig: string, extra = ''): Promise<Running> {
  const { logger, logs } = capture();
  const store = join(dir, `store-${node}`);
  const file = join(dir, `${node}.yaml`);
  await writeFile(file, `listen: 127.0.0.1:0\nstore: ${store}\nstateDir: ${join(dir, `state-${node}`)}\nkubernetes:\n  enabled: true\n  kubeconfig: ${kubeconfig}\n${extra}`);
  const env = { ...process.env, NODE_NAME: node, HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: '', MODELSCOPE_API_TOKEN: '' };
  const d = await startDaemon(parseConfig(await readFile(file, 'utf8'), file), {
    logger,
    env,
    resyncMs: 0,
    backoff: { baseMs: 500, maxMs: 2_000, slowBaseMs: 500, slowMaxMs: 2_000 },
    kube: { statusIntervalMs: 100, nodePollMs: 300, retryMs: 200 },
  });
  const running = { d, logs, store };
  daemons.set(node, running);
  return running;
}

async function stopNode(node: string): Promise<void> {
  await daemons.get(node)?.d.stop();
  daemons.delete(node);
}

interface Mc {
  metadata: { name: string; uid: string };
  status?: { ready?: number; failed?: number; total?: number; nodes?: { node: string; state: string; commit?: string; bytesDone: number; bytesTotal: number; error?: string; updatedAt: string }[] };
}

const getMc = async (name: string) => (await k.get<Mc>(`/apis/swift-fetch.io/v1alpha1/modelcaches/${name}`)).body;
const nodeLabels = async (node: string) => (await k.get<{ metadata: { labels?: Record<string, string> } }>(`/api/v1/nodes/${node}`)).body.metadata.labels ?? {};
const createMc = (name: string, spec: Record<string, unknown>) =>
  k.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'swift-fetch.io/v1alpha1', kind: 'ModelCache', metadata: { name }, spec }) });
const states = (mc: Mc) => Object.fromEntries((mc.status?.nodes ?? []).map((n) => [n.node, n.state]));
const repoBytes = (id: string) => repos[id]!.files.reduce((n, f) => n + f.size, 0);

describe.skipIf(!kubeSuiteRuns(true))('daemons and ModelCaches on a real API server', () => {
  beforeAll(async () => {
    dir = await tmpDir('sf-kube-sync-');
    [k, hub] = await Promise.all([startKubeCluster(), startFakeHub()]);
    repos['org/model'] = await hub.addRepo({ id: 'org/model', files: { 'config.json': '{"model_type":"llama"}', 'model.safetensors': makeContent(3 * 1024 * 1024 + 7, 1) } });
    repos['org/other'] = await hub.addRepo({ id: 'org/other', files: { 'config.json': '{"a":1}', 'model.safetensors': makeContent(1024 * 1024, 2) } });
    repos['org/gated'] = await hub.addRepo({ id: 'org/gated', files: { 'config.json': '{}' }, gated: { token: 'hf_right' } });
    await k.kubectlOk(['apply', '--server-side', '-f', join(chartDir, 'crds')]);
    await k.kubectlOk(['wait', '--for=condition=Established', '--timeout=30s', 'crd/modelcaches.swift-fetch.io']);
    await k.kubectlOk(['create', 'namespace', NS]);
    // The chart's own ServiceAccount and RBAC, as helm renders them.
    const rendered = await k.helm(['template', 'sf', chartDir, '--namespace', NS, '--set', 'kubernetes.enabled=true',
      '--show-only', 'templates/serviceaccount.yaml', '--show-only', 'templates/rbac.yaml']);
    expect(rendered.stderr).toBe('');
    await k.kubectlOk(['apply', '-f', '-'], { input: rendered.stdout });
    for (const [node, labels] of Object.entries(NODES)) {
      await k.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: node, labels: { ...labels, 'models.swift-fetch.io/0000000000000000': 'ready' } } }) });
    }
    const kc = await k.serviceAccountKubeconfig(NS, SA);
    await Promise.all(Object.keys(NODES).map((n) => startNode(n, kc)));
  }, 120_000);

  afterAll(async () => {
    for (const { d } of daemons.values()) await d.stop();
    await Promise.all([k?.stop(), hub?.close()]);
  });

  it('removes a stale placement label left by an earlier run, and keeps the others', async () => {
    for (const n of Object.keys(NODES)) {
      await until(async () => !('models.swift-fetch.io/0000000000000000' in (await nodeLabels(n))), 100, 20_000);
      expect((await nodeLabels(n)).gpu).toBe(NODES[n as keyof typeof NODES].gpu);
    }
  });

  it('three daemons pull one ModelCache, each reports its own node, and each Node is labelled once verified', async () => {
    await createMc('tiny', { ref: 'huggingface://org/model' });
    const mc = await until(async () => {
      const m = await getMc('tiny');
      return m.status?.ready === 3 ? m : undefined;
    }, 100, 60_000);
    expect(mc.status).toMatchObject({ ready: 3, failed: 0, total: 3 });
    expect(mc.status!.nodes!.map((n) => n.node).sort()).toEqual(['n1', 'n2', 'n3']);
    for (const e of mc.status!.nodes!) {
      expect(e).toMatchObject({ state: 'ready', commit: repos['org/model']!.commit, bytesDone: repoBytes('org/model'), bytesTotal: repoBytes('org/model') });
      expect(Date.now() - Date.parse(e.updatedAt)).toBeLessThan(60_000);
    }
    // The bytes really are in each node's own store.
    for (const { store } of daemons.values()) {
      const rec = await new Store(store).findRecord(parseRef('hf://org/model'), 'main');
      expect(rec.files.map((f) => f.sha256).sort()).toEqual(repos['org/model']!.files.map((f) => f.sha256).sort());
    }
    const label = await labelFor('hf://org/model@main');
    for (const n of Object.keys(NODES)) expect((await nodeLabels(n))[label]).toBe('ready');
    // Each entry is owned by that node's own field manager (server-side apply), not shared.
    const managed = await k.kubectlOk(['get', 'modelcache', 'tiny', '--show-managed-fields', '-o', 'json']);
    const managers = (JSON.parse(managed) as { metadata: { managedFields: { manager: string; subresource?: string }[] } }).metadata.managedFields
      .filter((f) => f.subresource === 'status').map((f) => f.manager).sort();
    expect(managers).toEqual(['swift-fetch-node/n1', 'swift-fetch-node/n2', 'swift-fetch-node/n3', 'swift-fetch-totals']);
    // kubectl shows the progress columns, and describe shows the per-node Ready events.
    const table = await k.kubectlOk(['get', 'modelcaches', 'tiny', '--no-headers']);
    expect(table.trim().split(/\s+/).slice(0, 5)).toEqual(['tiny', 'huggingface://org/model', '3', '0', '3']);
    const described = await k.kubectlOk(['describe', 'modelcache', 'tiny']);
    for (const n of Object.keys(NODES)) expect(described).toMatch(new RegExp(`Normal\\s+Ready\\s+.*node ${n}: verified at commit ${repos['org/model']!.commit}`));
  });

  it('honours nodeSelector against each Node\'s labels, follows a relabelled Node, and unlabels when the cache is deleted', async () => {
    await createMc('a100-only', { ref: 'hf://org/other', nodeSelector: { gpu: 'a100' } });
    const mc = await until(async () => {
      const m = await getMc('a100-only');
      return m.status?.ready === 2 ? m : undefined;
    }, 100, 60_000);
    expect(states(mc)).toEqual({ n1: 'ready', n2: 'ready' });
    expect(mc.status).toMatchObject({ ready: 2, failed: 0, total: 2 });
    const label = await labelFor('hf://org/other@main');
    expect((await nodeLabels('n1'))[label]).toBe('ready');
    expect((await nodeLabels('n3'))[label]).toBeUndefined();
    await expect(new Store(daemons.get('n3')!.store).findRecord(parseRef('hf://org/other'), 'main')).rejects.toThrow(/not in the store/);

    await k.kubectlOk(['label', 'node', 'n3', 'gpu=a100', '--overwrite']);
    await until(async () => (await getMc('a100-only')).status?.ready === 3, 100, 60_000);
    expect((await nodeLabels('n3'))[label]).toBe('ready');

    await k.kubectlOk(['label', 'node', 'n3', 'gpu=t4', '--overwrite']);
    // n3 no longer matches: its entry goes, and so does its label (the model is no longer wanted there).
    await until(async () => !('n3' in states(await getMc('a100-only'))), 100, 30_000);
    await until(async () => !(label in (await nodeLabels('n3'))), 100, 30_000);
    // The totals are a second write after the entry's (their own field manager, under optimistic
    // concurrency): they follow, not necessarily by the time the entry and the label are gone.
    const after = await until(async () => {
      const s = (await getMc('a100-only')).status;
      return s?.total === 2 ? s : undefined;
    }, 100, 30_000);
    expect(after).toMatchObject({ ready: 2, failed: 0, total: 2 });

    await k.kubectlOk(['delete', 'modelcache', 'a100-only']);
    for (const n of ['n1', 'n2']) await until(async () => !(label in (await nodeLabels(n))), 100, 30_000);
    // The other cache's label is untouched.
    expect((await nodeLabels('n1'))[await labelFor('hf://org/model@main')]).toBe('ready');
  });

  it('removes the label of a model evicted from a node\'s store', async () => {
    const label = await labelFor('hf://org/model@main');
    const { store } = daemons.get('n2')!;
    const s = new Store(store);
    const rec = await s.findRecord(parseRef('hf://org/model'), 'main');
    await s.removeRevision(parseRef('hf://org/model'), rec.commit);
    await until(async () => !(label in (await nodeLabels('n2'))), 100, 30_000);
    expect((await nodeLabels('n1'))[label]).toBe('ready');
    const mc = await until(async () => {
      const m = await getMc('tiny');
      return m.status?.ready === 2 ? m : undefined;
    }, 100, 30_000);
    expect(mc.status!.nodes!.find((n) => n.node === 'n2')).toMatchObject({ state: 'pending', error: 'no longer in the store' });
  });

  it('turns an auth failure into a failed entry per node and Warning events on the cache, with no label', async () => {
    await createMc('gated', { ref: 'hf://org/gated' });
    const mc = await until(async () => {
      const m = await getMc('gated');
      return m.status?.failed === 3 ? m : undefined;
    }, 100, 60_000);
    expect(mc.status).toMatchObject({ ready: 0, failed: 3, total: 3 });
    for (const e of mc.status!.nodes!) expect(e.error).toMatch(/401|gated|token|auth/i);
    const events = await until(async () => {
      const list = JSON.parse(await k.kubectlOk(['get', 'events', '-n', 'default', '--field-selector', `involvedObject.name=gated,involvedObject.uid=${mc.metadata.uid}`, '-o', 'json'])) as {
        items: { reason: string; type: string; message: string; source: { host: string }; involvedObject: { kind: string } }[];
      };
      const auth = list.items.filter((e) => e.reason === 'AuthFailed');
      return new Set(auth.map((e) => e.source.host)).size === 3 ? auth : undefined;
    }, 200, 30_000);
    for (const e of events) {
      expect(e).toMatchObject({ type: 'Warning', involvedObject: { kind: 'ModelCache' } });
      expect(e.message).toMatch(new RegExp(`^node ${e.source.host}: `));
    }
    const label = await labelFor('hf://org/gated@main');
    for (const n of Object.keys(NODES)) expect((await nodeLabels(n))[label]).toBeUndefined();
    await k.kubectlOk(['delete', 'modelcache', 'gated']);
  });

  it('reports a ref the CRD pattern lets through but the daemon cannot parse as InvalidSpec, per node', async () => {
    await createMc('dotdot', { ref: 'hf://org/model@a..b' });
    const mc = await until(async () => {
      const m = await getMc('dotdot');
      return m.status?.failed === 3 ? m : undefined;
    }, 100, 30_000);
    for (const e of mc.status!.nodes!) expect(e.error).toMatch(/^invalid model reference "hf:\/\/org\/model@a\.\.b": bad revision "a\.\.b"$/);
    const described = await until(async () => {
      const out = await k.kubectlOk(['describe', 'modelcache', 'dotdot']);
      return (out.match(/Warning\s+InvalidSpec/g) ?? []).length === 3 ? out : undefined;
    }, 200, 30_000);
    expect(described).toMatch(/node n1: invalid model reference/);
    await k.kubectlOk(['delete', 'modelcache', 'dotdot']);
  });

  it('re-hashes before labelling: a store whose bytes no longer match the record is reported failed, not ready', async () => {
    // n4 starts on a copy of the model whose content was altered in place after it was published.
    await k.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n4' } }) });
    const store = join(dir, 'store-n4');
    const s = new Store(store);
    const { pullModel } = await import('../../src/pull/index.js');
    const env = { ...process.env, HF_ENDPOINT: hub.hfEndpoint, HF_TOKEN: '' };
    const res = await pullModel(parseRef('hf://org/model'), { store, stateDir: join(dir, 'state-n4-pre'), env });
    const fh = await open(join(res.path, 'model.safetensors'), 'r+');
    await fh.write(Buffer.from([0x42]), 0, 1, 1000);
    await fh.close();
    expect((await s.findRecord(parseRef('hf://org/model'), 'main')).commit).toBe(repos['org/model']!.commit);

    await startNode('n4', await k.serviceAccountKubeconfig(NS, SA));
    const entry = await until(async () => (await getMc('tiny')).status?.nodes?.find((n) => n.node === 'n4' && n.state === 'failed'), 100, 60_000);
    expect(entry.error).toMatch(/^verification failed: model\.safetensors: hash mismatch, expected sha256:[0-9a-f]{64}, found sha256:[0-9a-f]{64}$/);
    // The daemon itself thought the model ready (its pull found the published record).
    expect(daemons.get('n4')!.d.reconciler.get('hf://org/model@main')?.state).toBe('ready');
    expect((await nodeLabels('n4'))[await labelFor('hf://org/model@main')]).toBeUndefined();
    const described = await k.kubectlOk(['describe', 'modelcache', 'tiny']);
    expect(described).toMatch(/Warning\s+IntegrityFailed\s+.*node n4: verification failed: model\.safetensors: hash mismatch/);
    await stopNode('n4');
  });

  it('reports a full disk as StorageFailed on the cache, and the node stays unlabelled', async (ctx) => {
    // n7's store is a 1 MiB tmpfs; the cache's model is 3 MiB.
    const store = join(dir, 'store-n7');
    await mkdir(store);
    let unmount = () => {};
    mountTmpfs(store, '1m', (why) => ctx.skip(why), (undo) => (unmount = undo));
    try {
      await k.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n7' } }) });
      await startNode('n7', await k.serviceAccountKubeconfig(NS, SA));
      const entry = await until(async () => (await getMc('tiny')).status?.nodes?.find((n) => n.node === 'n7' && n.state === 'failed'), 100, 60_000);
      expect(entry.error).toContain(store);
      const described = await until(async () => {
        const out = await k.kubectlOk(['describe', 'modelcache', 'tiny']);
        return /Warning\s+StorageFailed\s+.*node n7: /.test(out) ? out : undefined;
      }, 200, 30_000);
      expect(described).not.toMatch(/StorageFailed\s+.*node n[1-3]: /);
      expect((await nodeLabels('n7'))[await labelFor('hf://org/model@main')]).toBeUndefined();
    } finally {
      await stopNode('n7');
      unmount();
    }
  });

  it('a daemon whose RBAC lacks a verb keeps pulling and logs once what it lacks', async () => {
    await k.kubectlOk(['create', 'serviceaccount', 'limited', '-n', NS]);
    // Everything the chart grants except patch on nodes, and no events at all.
    await k.kubectlOk(['create', 'clusterrole', 'limited', '--verb=get,list,watch', '--resource=modelcaches.swift-fetch.io']);
    await k.kubectlOk(['create', 'clusterrole', 'limited-status', '--verb=patch', '--resource=modelcaches.swift-fetch.io/status']);
    await k.kubectlOk(['create', 'clusterrole', 'limited-nodes', '--verb=get', '--resource=nodes']);
    for (const r of ['limited', 'limited-status', 'limited-nodes']) {
      await k.kubectlOk(['create', 'clusterrolebinding', r, `--clusterrole=${r}`, `--serviceaccount=${NS}:limited`]);
    }
    await k.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n5' } }) });
    const kc = await k.serviceAccountKubeconfig(NS, 'limited');
    const { d, logs } = await startNode('n5', kc, 'models: [hf://org/other]\n');
    try {
      // The model from the config and the one from the ModelCache both arrive.
      await until(() => d.reconciler.get('hf://org/other@main')?.state === 'ready' && d.reconciler.get('hf://org/model@main')?.state === 'ready', 100, 60_000);
      // Its status entry is written (that it may do), the label is not (that it may not).
      await until(async () => (await getMc('tiny')).status?.nodes?.find((n) => n.node === 'n5' && n.state === 'ready'), 100, 30_000);
      const lacks = await until(() => {
        const hits = logs.filter((l) => l.area === 'label Node');
        return hits.length > 0 ? hits : undefined;
      }, 100, 30_000);
      // Several node polls later it has still said so only once.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(logs.filter((l) => l.area === 'label Node')).toHaveLength(1);
      expect(lacks[0]).toMatchObject({ level: 40, lacks: { verb: 'patch', resource: 'nodes' } });
      expect(lacks[0]!.err).toMatch(/^RBAC does not allow "patch" on nodes: nodes "n5" is forbidden: User "system:serviceaccount:models:limited" cannot patch resource "nodes"/);
      expect((await nodeLabels('n5'))[await labelFor('hf://org/model@main')]).toBeUndefined();
      const events = logs.filter((l) => l.area === 'record Events');
      expect(events.length).toBeLessThanOrEqual(1);
    } finally {
      await stopNode('n5');
    }
  });

  it('a daemon that cannot reach the API at all logs it once and still pulls its configured models', async () => {
    const kc = join(dir, 'wrong.kubeconfig');
    // A valid kubeconfig with a token the server does not know.
    await writeFile(kc, (await readFile(k.kubeconfig, 'utf8')).replace(k.adminToken, 'not-a-token'));
    const { d, logs } = await startNode('n6', kc, 'models: [hf://org/other]\n');
    try {
      await until(() => d.reconciler.get('hf://org/other@main')?.state === 'ready', 100, 60_000);
      await new Promise((r) => setTimeout(r, 1_000));
      const watch = logs.filter((l) => l.area === 'watch ModelCaches');
      expect(watch).toHaveLength(1);
      expect(watch[0]!.err).toMatch(/^the API server rejected our credentials \(401\)/);
    } finally {
      await stopNode('n6');
    }
  });
});
