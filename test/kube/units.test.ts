/**
 * The Kubernetes pieces that need no API server: the placement label's hash (checked against
 * sha256sum, not against itself), nodeSelector matching, totals, field-manager names, the
 * kubeconfig loader on real files, RBAC-naming of failures, and the daemon's `kubernetes` config key.
 */
import { EventEmitter } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { pino } from 'pino';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { KubeApiError, startKubeSync, inClusterConnection, loadKubeconfig, modelLabelKey, modelRefHash, nodeFieldManager, selectsNode, totals } from '../../src/kube/index.js';
import { describeKubeError, resourceOf } from '../../src/kube/problems.js';
import { run } from '../support/spawn.js';
import { Store } from '../../src/store/store.js';
import { tmpDir } from '../support/tmp.js';

async function sha256sum(text: string): Promise<string> {
  const r = await run('sh', ['-c', 'printf %s "$1" | sha256sum', 'sh', text]);
  return r.stdout.split(' ')[0]!;
}

describe('placement label', () => {
  it('is the first 16 hex of sha256 of the canonical ref, whatever alias or default revision was written', async () => {
    const canonical = 'hf://Qwen/Qwen2.5-0.5B-Instruct@main';
    const want = (await sha256sum(canonical)).slice(0, 16);
    for (const written of [canonical, 'hf://Qwen/Qwen2.5-0.5B-Instruct', 'huggingface://Qwen/Qwen2.5-0.5B-Instruct', ' hf://Qwen/Qwen2.5-0.5B-Instruct@main ']) {
      expect(modelRefHash(written, {})).toBe(want);
      expect(modelLabelKey(written, {})).toBe(`models.swift-fetch.io/${want}`);
    }
    // A bare ORG/NAME means ModelScope, or Hugging Face under USE_HF, as in ms-swift.
    expect(modelRefHash('Qwen/Qwen2.5-7B-Instruct', {})).toBe((await sha256sum('ms://Qwen/Qwen2.5-7B-Instruct@master')).slice(0, 16));
    expect(modelRefHash('Qwen/Qwen2.5-7B-Instruct', { USE_HF: '1' })).toBe((await sha256sum('hf://Qwen/Qwen2.5-7B-Instruct@main')).slice(0, 16));
    expect(modelRefHash('hf://Qwen/Qwen2.5-0.5B-Instruct@v1', {})).not.toBe(want);
    expect(() => modelRefHash('hf://no-name', {})).toThrow(/expected exactly ORG\/NAME/);
  });

  it('gives each node its own field manager, within the API limit of 128 characters', () => {
    expect(nodeFieldManager('gpu-node-1')).toBe('swift-fetch-node/gpu-node-1');
    const long = 'n'.repeat(253);
    expect(nodeFieldManager(long).length).toBeLessThanOrEqual(128);
    expect(nodeFieldManager(long)).not.toBe(nodeFieldManager('n'.repeat(252)));
  });
});

describe('ModelCache rules', () => {
  it('selects a node the way a pod nodeSelector does: every listed label must match', () => {
    const labels = { gpu: 'a100', zone: 'a' };
    expect(selectsNode({}, labels)).toBe(true);
    expect(selectsNode({ nodeSelector: {} }, labels)).toBe(true);
    expect(selectsNode({ nodeSelector: { gpu: 'a100' } }, labels)).toBe(true);
    expect(selectsNode({ nodeSelector: { gpu: 'a100', zone: 'b' } }, labels)).toBe(false);
    expect(selectsNode({ nodeSelector: { missing: '' } }, labels)).toBe(false);
  });

  it('counts totals from the entries', () => {
    const e = (state: 'ready' | 'failed' | 'downloading') => ({ node: state, state, bytesDone: 0, bytesTotal: 0, updatedAt: '' });
    expect(totals([e('ready'), e('ready'), e('failed'), e('downloading')])).toEqual({ ready: 2, failed: 1, total: 4 });
    expect(totals(undefined)).toEqual({ ready: 0, failed: 0, total: 0 });
  });
});

describe('API failures name what the RBAC lacks', () => {
  it('maps API paths to RBAC resources', () => {
    expect(resourceOf('/api/v1/nodes/n1')).toBe('nodes');
    expect(resourceOf('/apis/swift-fetch.io/v1alpha1/modelcaches')).toBe('modelcaches.swift-fetch.io');
    expect(resourceOf('/apis/swift-fetch.io/v1alpha1/modelcaches/x/status')).toBe('modelcaches.swift-fetch.io/status');
    expect(resourceOf('/api/v1/namespaces/default/events')).toBe('events in namespace default');
    expect(resourceOf('/api/v1/namespaces/default/events/e1?x=1')).toBe('events in namespace default');
  });

  it('says which verb on which resource was refused', () => {
    const e = new KubeApiError(403, 'Forbidden', 'nodes "n1" is forbidden', 'patch', '/api/v1/nodes/n1');
    expect(describeKubeError(e)).toBe('RBAC does not allow "patch" on nodes: nodes "n1" is forbidden');
    expect(describeKubeError(new KubeApiError(0, 'Unreachable', 'cannot reach', 'get', '/api/v1/nodes/n1'))).toBe('get nodes failed (0 Unreachable): cannot reach');
  });
});

describe('connection settings', () => {
  it('reads a kubeconfig: current context, CA and token files relative to it, inline data', async () => {
    const dir = await tmpDir();
    await writeFile(join(dir, 'ca.pem'), 'CA PEM');
    await writeFile(join(dir, 'token'), 'tok-from-file\n');
    const file = join(dir, 'config');
    await writeFile(file, [
      'apiVersion: v1', 'kind: Config', 'current-context: b',
      'clusters:',
      '  - {name: one, cluster: {server: "https://10.0.0.1:6443/", certificate-authority: ca.pem}}',
      `  - {name: two, cluster: {server: "https://127.0.0.1:1", certificate-authority-data: ${Buffer.from('INLINE CA').toString('base64')}, insecure-skip-tls-verify: true}}`,
      'users:',
      '  - {name: u1, user: {tokenFile: token}}',
      `  - {name: u2, user: {client-certificate-data: ${Buffer.from('CERT').toString('base64')}, client-key-data: ${Buffer.from('KEY').toString('base64')}}}`,
      '  - {name: u3, user: {exec: {command: aws}}}',
      'contexts:',
      '  - {name: a, context: {cluster: one, user: u1}}',
      '  - {name: b, context: {cluster: two, user: u2}}',
      '  - {name: c, context: {cluster: one, user: u3}}',
      '  - {name: d, context: {cluster: nowhere, user: u1}}',
    ].join('\n'));
    const a = await loadKubeconfig(file, 'a');
    expect({ server: a.server, ca: a.ca, insecure: a.insecureSkipTlsVerify, token: await a.token() }).toEqual({ server: 'https://10.0.0.1:6443', ca: 'CA PEM', insecure: false, token: 'tok-from-file' });
    const b = await loadKubeconfig(file);
    expect({ server: b.server, ca: b.ca, cert: b.cert, key: b.key, insecure: b.insecureSkipTlsVerify, token: await b.token() }).toEqual({ server: 'https://127.0.0.1:1', ca: 'INLINE CA', cert: 'CERT', key: 'KEY', insecure: true, token: undefined });
    await expect(loadKubeconfig(file, 'c')).rejects.toThrow(/exec plugin or auth provider, which the daemon does not run/);
    await expect(loadKubeconfig(file, 'd')).rejects.toThrow(/no cluster named "nowhere"/);
    await expect(loadKubeconfig(join(dir, 'missing'))).rejects.toThrow(/cannot read kubeconfig .*missing: ENOENT/);
  });

  it('builds the in-cluster connection from the service-account files, and says why it cannot', async () => {
    const dir = await tmpDir();
    await expect(inClusterConnection({})).rejects.toThrow(/KUBERNETES_SERVICE_HOST is unset/);
    await expect(inClusterConnection({ KUBERNETES_SERVICE_HOST: '10.96.0.1' }, dir)).rejects.toThrow(/no service-account credentials .*ENOENT.*automountServiceAccountToken/);
    await writeFile(join(dir, 'token'), 'sa-token\n');
    await writeFile(join(dir, 'ca.crt'), 'CLUSTER CA');
    const c = await inClusterConnection({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' }, dir);
    expect({ server: c.server, ca: c.ca, token: await c.token() }).toEqual({ server: 'https://[fd00::1]:6443', ca: 'CLUSTER CA', token: 'sa-token' });
  });
});

describe('daemon config key `kubernetes`', () => {
  it('is off unless enabled, resolves the kubeconfig path, and rejects typos and wrong types', () => {
    expect(parseConfig('{}', '/etc/sf/config.yaml', { env: {} }).kubernetes).toEqual({ enabled: false });
    expect(parseConfig('kubernetes: {enabled: true, kubeconfig: kc.yaml, context: ci}', '/etc/sf/config.yaml', { env: {} }).kubernetes).toEqual({
      enabled: true,
      kubeconfig: '/etc/sf/kc.yaml',
      context: 'ci',
    });
    expect(() => parseConfig('kubernetes: {enabled: yes please}', 'config.yaml', { env: {} })).toThrow(/^config\.yaml: kubernetes\.enabled: expected true or false, got "yes please"$/);
    expect(() => parseConfig('kubernetes: {enable: true}', 'config.yaml', { env: {} })).toThrow(/^config\.yaml: kubernetes\.enable: unknown key \(expected one of: enabled, kubeconfig, context\)$/);
  });
});

describe('startKubeSync without a node name', () => {
  it('says once why it does not sync, declares nothing, and closes at once', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const feed = Object.assign(new EventEmitter(), { list: () => [], get: () => undefined });
    const declared: unknown[] = [];
    const sync = startKubeSync({ settings: { enabled: true, kubeconfig: '/nonexistent' }, env: {}, logger, models: feed, store: new Store(await tmpDir()), declare: (s) => declared.push(s) });
    await sync.close();
    expect(sync.signal.aborted).toBe(true);
    expect(declared).toEqual([]);
    expect(lines.map((l) => l.msg)).toEqual(['kubernetes.enabled but NODE_NAME is unset (the chart sets it from spec.nodeName): not syncing with the API']);
    expect(feed.listenerCount('change')).toBe(0);
  });
});
