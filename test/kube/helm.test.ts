/**
 * The chart against a real API server with the real helm: every rendered object passes the
 * server's own validation (strict: unknown fields are errors); install, upgrade and uninstall work;
 * the generated token Secrets survive `helm upgrade` (and a reinstall) through `lookup`; and the
 * daemon's ServiceAccount may do exactly what the daemon does with the API, nothing more.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { VALUE_SETS, chartDir, valuesDir } from '../chart/support.js';
import { kubeSuiteRuns, startKubeCluster, type KubeCluster } from '../support/kube.js';

const NS = 'models';
const RELEASE = 'sf';
const SA = `system:serviceaccount:${NS}:${RELEASE}-swift-fetch`;
let k: KubeCluster;

async function helmOk(args: string[]): Promise<string> {
  const r = await k.helm(args);
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Data of every Secret of the release, by name. */
async function releaseSecrets(): Promise<Record<string, Record<string, string>>> {
  const list = JSON.parse(await k.kubectlOk(['get', 'secrets', '-n', NS, '-l', `app.kubernetes.io/instance=${RELEASE}`, '-o', 'json'])) as {
    items: { metadata: { name: string }; data: Record<string, string> }[];
  };
  return Object.fromEntries(list.items.map((s) => [s.metadata.name, s.data]));
}

async function canI(verb: string, resource: string, extra: string[] = []): Promise<boolean> {
  const r = await k.kubectl(['auth', 'can-i', verb, resource, '--as', SA, ...extra]);
  if (r.code !== 0 && r.stdout.trim() !== 'no') throw new Error(`kubectl auth can-i failed: ${r.stderr}`);
  return r.stdout.trim() === 'yes';
}

/** `kubectl auth can-i --list` as the daemon, without what every authenticated user may do. */
async function grantedRules(namespace: string): Promise<string[]> {
  const out = await k.kubectlOk(['auth', 'can-i', '--list', '--as', SA, '-n', namespace]);
  return out
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s{2,}/))
    // Rows: Resources, Non-Resource URLs, Resource Names, Verbs; URL rows have no resource column.
    // Discovery URLs and self-reviews are what every authenticated user may do.
    .filter((cols) => cols.length === 4 && !/^selfsubject/.test(cols[0]!))
    .map(([resource, , names, verbs]) => `${resource} ${names} ${verbs}`)
    .sort();
}

describe.skipIf(!kubeSuiteRuns(true))('helm chart on a real API server', () => {
  beforeAll(async () => {
    k = await startKubeCluster();
  }, 120_000);
  afterAll(async () => k?.stop());

  it('every object of every value set passes strict server-side validation', async () => {
    await k.kubectlOk(['create', 'namespace', 'validate']);
    // There is no controller manager to create each namespace's default ServiceAccount, which the
    // chart's test pod runs as.
    await k.kubectlOk(['create', 'serviceaccount', 'default', '-n', 'validate']);
    // The CRD first: it is what makes ModelCache-related RBAC meaningful, and it must itself validate.
    await k.kubectlOk(['apply', '--server-side', '-f', join(chartDir, 'crds')]);
    const sets: Record<string, string[]> = { ...VALUE_SETS, kubernetes: [] };
    // The ServiceMonitor kind belongs to prometheus-operator, which this bare API server lacks.
    delete sets.monitoring;
    for (const [name, files] of Object.entries(sets)) {
      const args = ['template', RELEASE, chartDir, '--namespace', 'validate', ...files.flatMap((f) => ['--values', join(valuesDir, f)])];
      if (name === 'kubernetes') args.push('--set', 'kubernetes.enabled=true');
      const rendered = await helmOk(args);
      const r = await k.kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], { input: rendered });
      expect(r.stderr, name).toBe('');
      expect(r.code, name).toBe(0);
      expect(r.stdout, name).toMatch(/daemonset\.apps\/sf-swift-fetch created \(server dry run\)/);
      if (name === 'kubernetes') expect(r.stdout).toMatch(/clusterrole\.rbac\.authorization\.k8s\.io\/validate-sf-swift-fetch created \(server dry run\)/);
    }
  });

  it('installs, upgrades (tokens kept through lookup, RBAC added), uninstalls (keeping the token and the CRD) and reinstalls', async () => {
    await helmOk(['install', RELEASE, chartDir, '--namespace', NS, '--create-namespace']);
    expect(await helmOk(['status', RELEASE, '-n', NS])).toMatch(/STATUS: deployed/);
    await k.kubectlOk(['wait', '--for=condition=Established', '--timeout=30s', 'crd/modelcaches.swift-fetch.io']);
    const before = await releaseSecrets();
    expect(Object.keys(before)).toContain(`${RELEASE}-swift-fetch-peer-token`);
    for (const data of Object.values(before)) for (const v of Object.values(data)) expect(Buffer.from(v, 'base64').length).toBeGreaterThanOrEqual(32);
    // Without kubernetes.enabled the daemon has no API access at all.
    expect(await canI('list', 'modelcaches.swift-fetch.io')).toBe(false);
    expect(await canI('get', 'nodes')).toBe(false);

    await helmOk(['upgrade', RELEASE, chartDir, '--namespace', NS, '--reuse-values', '--set', 'kubernetes.enabled=true', '--set', 'daemon.logLevel=debug']);
    expect(await releaseSecrets()).toEqual(before);
    const cm = JSON.parse(await k.kubectlOk(['get', 'configmap', `${RELEASE}-swift-fetch`, '-n', NS, '-o', 'json'])) as { data: Record<string, string> };
    const cfg = parseConfig(cm.data['config.yaml']!, '/etc/swift-fetch/config.yaml', { env: {} });
    expect(cfg.kubernetes).toEqual({ enabled: true });
    expect(cfg.logLevel).toBe('debug');
    const ds = JSON.parse(await k.kubectlOk(['get', 'daemonset', `${RELEASE}-swift-fetch`, '-n', NS, '-o', 'json'])) as {
      spec: { template: { spec: { automountServiceAccountToken: boolean; serviceAccountName: string; containers: { env: { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[] }[] } } };
    };
    expect(ds.spec.template.spec.automountServiceAccountToken).toBe(true);
    expect(`system:serviceaccount:${NS}:${ds.spec.template.spec.serviceAccountName}`).toBe(SA);
    expect(ds.spec.template.spec.containers[0]!.env.find((e) => e.name === 'NODE_NAME')?.valueFrom?.fieldRef?.fieldPath).toBe('spec.nodeName');

    await helmOk(['uninstall', RELEASE, '-n', NS]);
    const left = JSON.parse(await k.kubectlOk(['get', 'all,configmaps,serviceaccounts,secrets,roles,rolebindings', '-n', NS, '-l', `app.kubernetes.io/instance=${RELEASE}`, '-o', 'json'])) as { items: { kind: string; metadata: { name: string } }[] };
    expect(left.items.map((i) => `${i.kind}/${i.metadata.name}`).sort()).toEqual([`Secret/${RELEASE}-swift-fetch-api-token`, `Secret/${RELEASE}-swift-fetch-peer-token`]);
    const cluster = await k.kubectl(['get', 'clusterroles,clusterrolebindings', '-l', `app.kubernetes.io/instance=${RELEASE}`, '-o', 'name']);
    expect(cluster.stdout.trim()).toBe('');
    const events = await k.kubectl(['get', 'roles,rolebindings', '-n', 'default', '-l', `app.kubernetes.io/instance=${RELEASE}`, '-o', 'name']);
    expect(events.stdout.trim()).toBe('');
    expect((await k.kubectl(['get', 'crd', 'modelcaches.swift-fetch.io'])).code).toBe(0);

    // A reinstall adopts the kept Secret and keeps its token, so running daemons keep their peers.
    await helmOk(['install', RELEASE, chartDir, '--namespace', NS, '--set', 'kubernetes.enabled=true']);
    const after = await releaseSecrets();
    expect(after[`${RELEASE}-swift-fetch-peer-token`]).toEqual(before[`${RELEASE}-swift-fetch-peer-token`]);
    // So does the API token, so that init containers keep being heard.
    expect(Object.keys(before)).toContain(`${RELEASE}-swift-fetch-api-token`);
    expect(after[`${RELEASE}-swift-fetch-api-token`]).toEqual(before[`${RELEASE}-swift-fetch-api-token`]);
  });

  it('lets the daemon\'s ServiceAccount do exactly what the daemon does, and nothing more', async () => {
    const yes: Array<[string, string, string[]?]> = [
      ['get', 'modelcaches.swift-fetch.io'],
      ['list', 'modelcaches.swift-fetch.io'],
      ['watch', 'modelcaches.swift-fetch.io'],
      ['patch', 'modelcaches.swift-fetch.io', ['--subresource=status']],
      ['get', 'nodes'],
      ['patch', 'nodes'],
      ['create', 'events', ['-n', 'default']],
      ['patch', 'events', ['-n', 'default']],
    ];
    const no: Array<[string, string, string[]?]> = [
      ['create', 'modelcaches.swift-fetch.io'],
      ['update', 'modelcaches.swift-fetch.io'],
      ['patch', 'modelcaches.swift-fetch.io'],
      ['delete', 'modelcaches.swift-fetch.io'],
      ['update', 'modelcaches.swift-fetch.io', ['--subresource=status']],
      ['list', 'nodes'],
      ['watch', 'nodes'],
      ['delete', 'nodes'],
      ['patch', 'nodes', ['--subresource=status']],
      ['create', 'events', ['-n', NS]],
      ['list', 'events', ['-n', 'default']],
      ['get', 'secrets', ['-n', NS]],
      ['list', 'secrets', ['-n', 'default']],
      ['create', 'pods', ['-n', NS]],
      ['get', 'configmaps', ['-n', NS]],
      ['create', 'customresourcedefinitions.apiextensions.k8s.io'],
    ];
    for (const [verb, res, extra] of yes) expect(await canI(verb, res, extra), `${verb} ${res} ${extra ?? ''}`).toBe(true);
    for (const [verb, res, extra] of no) expect(await canI(verb, res, extra), `${verb} ${res} ${extra ?? ''}`).toBe(false);
    // The whole list, so that nothing granted escapes the table above.
    expect(await grantedRules('default')).toEqual([
      'events [] [create patch]',
      'modelcaches.swift-fetch.io [] [get list watch]',
      'modelcaches.swift-fetch.io/status [] [patch]',
      'nodes [] [get patch]',
    ]);
    expect(await grantedRules(NS)).toEqual([
      'modelcaches.swift-fetch.io [] [get list watch]',
      'modelcaches.swift-fetch.io/status [] [patch]',
      'nodes [] [get patch]',
    ]);
  });
});
