/**
 * The ModelCache CRD as shipped in the chart, installed into a real API server: it is accepted,
 * the server enforces its validation, status is a subresource with a per-node map, and
 * `kubectl get modelcaches` prints the progress columns.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeApiError, KubeClient, loadKubeconfig } from '../../src/kube/index.js';
import { chartDir } from '../chart/support.js';
import { kubeSuiteRuns, startKubeCluster, type KubeCluster } from '../support/kube.js';

const CRD = join(chartDir, 'crds/modelcaches.swift-fetch.io.yaml');
let k: KubeCluster;

function mc(name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({ apiVersion: 'swift-fetch.io/v1alpha1', kind: 'ModelCache', metadata: { name }, spec });
}

describe.skipIf(!kubeSuiteRuns())('ModelCache CRD against a real API server', () => {
  beforeAll(async () => {
    k = await startKubeCluster();
    await k.kubectlOk(['apply', '--server-side', '-f', CRD]);
    await k.kubectlOk(['wait', '--for=condition=Established', '--timeout=30s', 'crd/modelcaches.swift-fetch.io']);
  }, 120_000);
  afterAll(async () => k?.stop());

  it('is cluster-scoped, served as swift-fetch.io/v1alpha1 with a status subresource and the short name mc', async () => {
    const out = await k.kubectlOk(['api-resources', '--api-group=swift-fetch.io', '-o', 'wide', '--no-headers']);
    const cols = out.trim().split(/\s+/);
    expect(cols.slice(0, 5)).toEqual(['modelcaches', 'mc', 'swift-fetch.io/v1alpha1', 'false', 'ModelCache']);
    const { status, body } = await k.get<{ resources: { name: string }[] }>('/apis/swift-fetch.io/v1alpha1');
    expect(status).toBe(200);
    expect(body.resources.map((r) => r.name).sort()).toEqual(['modelcaches', 'modelcaches/status']);
  });

  it('accepts valid caches and rejects bad refs, bad globs and bad selectors with the field named', async () => {
    await k.kubectlOk(['apply', '-f', '-'], { input: mc('qwen', { ref: 'hf://Qwen/Qwen2.5-0.5B-Instruct@main', include: ['*.json'], nodeSelector: { gpu: 'a100' } }) });
    await k.kubectlOk(['apply', '-f', '-'], { input: mc('ms-default', { ref: 'modelscope://Qwen/Qwen2.5-7B-Instruct' }) });
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ ref: 'Qwen/Qwen2.5' }, /spec\.ref: Invalid value: "Qwen\/Qwen2\.5": spec\.ref in body should match/],
      [{ ref: 's3://bucket/prefix' }, /spec\.ref: Invalid value/],
      [{ ref: 'hf://org/../etc' }, /spec\.ref: Invalid value/],
      [{ ref: 'hf://org/name@' }, /spec\.ref: Invalid value/],
      [{}, /spec\.ref: Required value/],
      [{ ref: 'hf://org/name', include: [''] }, /spec\.include\[0\]: Invalid value: "": spec\.include\[0\] in body should be at least 1 chars long/],
      [{ ref: 'hf://org/name', nodeSelector: { gpu: 3 } }, /spec\.nodeSelector\.gpu: Invalid value: "integer": spec\.nodeSelector\.gpu in body must be of type string/],
    ];
    for (const [spec, why] of bad) {
      const r = await k.kubectl(['apply', '-f', '-'], { input: mc('bad', spec) });
      expect(r.code, JSON.stringify(spec)).not.toBe(0);
      expect(r.stderr).toMatch(why);
    }
    const r = await k.kubectl(['apply', '--validate=strict', '-f', '-'], { input: mc('typo', { ref: 'hf://org/name', nodeSelectr: {} }) });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/unknown field "spec\.nodeSelectr"/);
  });

  it('keeps one status entry per node (list map keyed by node) and validates entries', async () => {
    const path = '/apis/swift-fetch.io/v1alpha1/modelcaches/qwen/status';
    const entry = (node: string, state: string) => ({ node, state, bytesDone: 1, bytesTotal: 2, updatedAt: new Date().toISOString() });
    const apply = (node: string, state: string) =>
      k.kubectl(['patch', '--subresource=status', 'modelcache', 'qwen', '--type=merge', '-p', JSON.stringify({ status: { nodes: [entry(node, state)] } })]);
    // A merge patch replaces the whole list; server-side apply by one manager per node merges by key.
    const client = new KubeClient(await loadKubeconfig(k.kubeconfig));
    const ssa = (node: string, state: string) =>
      client.patch(path, 'apply', { apiVersion: 'swift-fetch.io/v1alpha1', kind: 'ModelCache', metadata: { name: 'qwen' }, status: { nodes: [entry(node, state)] } }, {
        query: { fieldManager: `node-${node}`, force: true },
      });
    await ssa('n1', 'ready');
    await ssa('n2', 'downloading');
    await ssa('n1', 'verifying');
    await client.close();
    const got = await k.get<{ status: { nodes: { node: string; state: string }[] } }>(path);
    expect(got.body.status.nodes.map((n) => `${n.node}=${n.state}`).sort()).toEqual(['n1=verifying', 'n2=downloading']);
    const badState = await apply('n3', 'done');
    expect(badState.stderr).toMatch(/status\.nodes\[0\]\.state: Unsupported value: "done"/);
    const dup = await k.kubectl(['patch', '--subresource=status', 'modelcache', 'qwen', '--type=merge', '-p', JSON.stringify({ status: { nodes: [entry('n1', 'ready'), entry('n1', 'failed')] } })]);
    expect(dup.stderr).toMatch(/Duplicate value/);
  });

  it('answers a watch from a version older than its history with 410 Gone, which the client reports as expired', async () => {
    const client = new KubeClient(await loadKubeconfig(k.kubeconfig));
    try {
      const err = await (async () => {
        for await (const ev of client.watch('/apis/swift-fetch.io/v1alpha1/modelcaches', '1', { timeoutSeconds: 5 })) void ev;
      })().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KubeApiError);
      expect((err as KubeApiError).expired).toBe(true);
      expect((err as KubeApiError).message).toMatch(/too old resource version/);
      // From the version a list returns, the same watch streams.
      const list = await client.get<{ metadata: { resourceVersion: string } }>('/apis/swift-fetch.io/v1alpha1/modelcaches');
      const seen: string[] = [];
      const watching = (async () => {
        for await (const ev of client.watch<{ metadata: { name: string } }>('/apis/swift-fetch.io/v1alpha1/modelcaches', list.metadata.resourceVersion, { timeoutSeconds: 3 })) {
          seen.push(`${ev.type} ${ev.object.metadata.name}`);
        }
      })();
      await new Promise((r) => setTimeout(r, 300));
      await k.kubectlOk(['apply', '-f', '-'], { input: mc('watched', { ref: 'hf://org/watched' }) });
      await watching;
      expect(seen).toContain('ADDED watched');
    } finally {
      await client.close();
    }
  });

  it('shows progress in `kubectl get modelcaches`', async () => {
    await k.kubectlOk(['patch', '--subresource=status', 'modelcache', 'qwen', '--type=merge', '-p', JSON.stringify({ status: { ready: 2, failed: 1, total: 3 } })]);
    const out = await k.kubectlOk(['get', 'modelcaches']);
    const [header, ...rows] = out.trim().split('\n');
    expect(header!.split(/\s{2,}/)).toEqual(['NAME', 'REF', 'READY', 'FAILED', 'NODES', 'AGE']);
    const row = rows.find((r) => r.startsWith('qwen '))!.split(/\s+/);
    expect(row.slice(0, 5)).toEqual(['qwen', 'hf://Qwen/Qwen2.5-0.5B-Instruct@main', '2', '1', '3']);
  });
});
