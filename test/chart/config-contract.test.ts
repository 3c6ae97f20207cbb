/**
 * CONTRACT: the chart's rendered ConfigMap must be accepted by the daemon's own loader
 * (`src/daemon/config.ts`: parseConfig / parseModelsFile), and what the loader makes of it must
 * match what the Kubernetes objects around it assume (probe and Service ports, mounted paths, the
 * peers' DNS name). The dashboard's metric names must be ones the daemon exports.
 */
import { posix } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, parseModelsFile, type DaemonConfig } from '../../src/daemon/config.js';
import { DaemonMetrics } from '../../src/daemon/metrics.js';
import {
  NAMESPACE,
  VALUE_SETS,
  configMapFiles,
  find,
  helmPath,
  podSpec,
  probePort,
  render,
  TLS_VALUES,
  renderSet,
  requireTool,
  type Rendered,
} from './support.js';

const runs = requireTool('helm', helmPath, 'HELM_BIN');
// The loader resolves relative paths against the config's directory; the chart mounts it here.
const CONFIG_PATH = '/etc/swift-fetch/config.yaml';

describe.skipIf(!runs).each(Object.keys(VALUE_SETS))('daemon config loader accepts the chart (%s)', (set) => {
  let r: Rendered;
  let cfg: DaemonConfig;
  beforeAll(async () => {
    r = await renderSet(set);
    // The env decides what a bare ORG/NAME means; give it no USE_HF so the chart's list reads as ModelScope.
    cfg = parseConfig(configMapFiles(r).config, CONFIG_PATH, { env: {} });
  });

  it('accepts the rendered config as is', () => {
    expect(() => parseConfig(configMapFiles(r).config, CONFIG_PATH, { env: {} })).not.toThrow();
  });

  it('listens on the port the probes, the container port and the Service use', () => {
    const ds = find(r, 'DaemonSet');
    const c = podSpec(ds).containers[0]!;
    expect(cfg.listen.host).toBe('0.0.0.0');
    expect(probePort(c, c.readinessProbe!.httpGet!.port)).toBe(cfg.listen.port);
    expect(probePort(c, c.livenessProbe!.httpGet!.port)).toBe(cfg.listen.port);
    expect(c.ports![0]!.containerPort).toBe(cfg.listen.port);
    const svc = find(r, 'Service', '-peers');
    expect((svc.spec as any).ports[0].port).toBe(cfg.listen.port);
  });

  it('names files and directories the pod actually mounts', () => {
    const ds = find(r, 'DaemonSet');
    const mounts = podSpec(ds).containers[0]!.volumeMounts!.map((m) => m.mountPath);
    expect(mounts).toContain(cfg.store);
    expect(mounts).toContain(cfg.stateDir);
    expect(mounts).toContain(cfg.imports);
    expect(mounts).toContain(posix.dirname(cfg.modelsFile!));
    if (cfg.peers.tokenFile) expect(mounts).toContain(posix.dirname(cfg.peers.tokenFile));
    expect(mounts).toContain(posix.dirname(cfg.api.tokenFile!));
    for (const f of [cfg.tls?.certFile, cfg.tls?.keyFile, cfg.peers.caFile]) if (f) expect(mounts).toContain(posix.dirname(f));
  });

  it('reads the api section: a token file always, no tls unless asked for', () => {
    expect(cfg.api).toEqual({ tokenFile: '/etc/swift-fetch/api-token/token', protectReads: false, maxRequested: 64, forgetFailedAfterMs: 15 * 60_000, requestsPerMinute: 60 });
    expect(cfg.tls).toBeUndefined();
  });

  it('reads the peers section as the chart wired it', () => {
    const values = set === 'peers-off';
    if (values) {
      expect(cfg.peers.dns).toBeUndefined();
      expect(cfg.peers.tokenFile).toBeUndefined();
      return;
    }
    const svc = find(r, 'Service', '-peers');
    expect(cfg.peers.dns).toBe(`${svc.metadata.name}.${NAMESPACE}.svc.cluster.local`);
    expect(cfg.peers.port).toBe(cfg.listen.port);
    expect(cfg.peers.uploadMaxRate).toBe(100_000_000);
    expect(cfg.peers.uploadConcurrency).toBe(4);
  });

  it('parses the mounted models file with the watcher\'s parser', () => {
    const specs = parseModelsFile(configMapFiles(r).models, cfg.modelsFile!, {});
    expect(cfg.models).toEqual([]);
    if (set === 'models') {
      expect(specs.map((s) => s.key)).toEqual([
        expect.stringMatching(/^hf:\/\/Qwen\/Qwen2\.5-0\.5B-Instruct@main$/),
        expect.stringMatching(/^ms:\/\/Qwen\/Qwen2\.5-7B-Instruct@master$/),
        expect.stringMatching(/^hf:\/\/meta-llama\/Llama-3\.2-1B@main$/),
        expect.stringMatching(/^ms:\/\/Qwen\/Qwen2\.5-1\.5B-Instruct@master$/),
      ]);
      expect(specs[1]!.include).toEqual(['*.json', '*.safetensors']);
      expect(specs[2]!.exclude).toEqual(['original/*']);
      expect(cfg.maxRate).toBe(200_000_000);
      expect(cfg.connections).toBe(32);
      expect(cfg.chunkSize).toBe(32 * 1024 * 1024);
      expect(cfg.logLevel).toBe('debug');
    }
  });
});

describe.skipIf(!runs)('daemon config loader accepts the chart with tls', () => {
  it('reads the listener\'s and the peers\' certificates where the pod mounts them, and the name peers check is on the Certificate', async () => {
    const r = await render(TLS_VALUES);
    const cfg = parseConfig(configMapFiles(r).config, CONFIG_PATH, { env: {} });
    expect(cfg.tls).toEqual({ certFile: '/etc/swift-fetch/tls/tls.crt', keyFile: '/etc/swift-fetch/tls/tls.key' });
    expect(cfg.peers.caFile).toBe('/etc/swift-fetch/tls/ca.crt');
    const mounts = podSpec(find(r, 'DaemonSet')).containers[0]!.volumeMounts!.map((m) => m.mountPath);
    for (const f of [cfg.tls!.certFile, cfg.tls!.keyFile, cfg.peers.caFile!]) expect(mounts).toContain(posix.dirname(f));
    // peers.serverName is left to its default, peers.dns, which the Certificate must carry.
    expect(cfg.peers.serverName).toBeUndefined();
    expect((find(r, 'Certificate').spec as { dnsNames: string[] }).dnsNames).toContain(cfg.peers.dns);
  });
});

describe.skipIf(!runs)('daemon config loader accepts the chart with object storage', () => {
  it('reads s3:// models, the replica and backup buckets, and the daemon gets the AWS variables the s3 client reads', async () => {
    const r = await renderSet('object-storage');
    const cfg = parseConfig(configMapFiles(r).config, CONFIG_PATH, { env: {} });
    expect(cfg.replicas).toEqual([{ bucket: 'hub-replica', prefix: 'mirror' }]);
    expect(cfg.backup).toEqual({ to: { bucket: 'model-backup', prefix: 'cluster-a' }, models: ['hf://Qwen/Qwen2.5-0.5B-Instruct@main'] });
    const specs = parseModelsFile(configMapFiles(r).models, cfg.modelsFile!, {});
    expect(specs.map((s) => s.key)).toContain('s3://team-models/finetunes/qwen-ckpt-100@latest');
    const env = podSpec(find(r, 'DaemonSet')).containers[0]!.env!;
    const byName = new Map(env.map((e) => [e.name, e]));
    expect(byName.get('AWS_REGION')?.value).toBe('eu-central-1');
    expect(byName.get('AWS_ENDPOINT_URL_S3')?.value).toBe('https://minio.storage.svc:9000');
    expect(byName.get('AWS_ACCESS_KEY_ID')?.valueFrom?.secretKeyRef).toMatchObject({ name: 's3-credentials', key: 'AWS_ACCESS_KEY_ID' });
    expect(byName.get('AWS_SECRET_ACCESS_KEY')?.valueFrom?.secretKeyRef).toMatchObject({ name: 's3-credentials', key: 'AWS_SECRET_ACCESS_KEY' });
  });

  it('renders no AWS variables and no buckets by default', async () => {
    const r = await renderSet('defaults');
    const cfg = parseConfig(configMapFiles(r).config, CONFIG_PATH, { env: {} });
    expect(cfg.replicas).toBeUndefined();
    expect(cfg.backup).toBeUndefined();
    expect(podSpec(find(r, 'DaemonSet')).containers[0]!.env!.filter((e) => e.name.startsWith('AWS_'))).toEqual([]);
  });
});

describe.skipIf(!runs)('Grafana dashboard', () => {
  it('queries only metrics the daemon exports', async () => {
    const r = await render(VALUE_SETS.monitoring);
    const dash = (find(r, 'ConfigMap', '-dashboard').data as Record<string, string>)['swift-fetch.json']!;
    const used = new Set(dash.match(/swift_fetch_[a-z_]+/g));
    expect(used.size).toBeGreaterThan(3);
    const metrics = new DaemonMetrics({
      models: () => [],
      activeTransfers: () => 0,
      rateLimit: () => 0,
      storeUsage: async () => ({ usedBytes: 0, freeBytes: 0 }),
    });
    const exported = new Set((await metrics.registry.getMetricsAsJSON()).map((m) => m.name));
    expect([...used].filter((m) => !exported.has(m))).toEqual([]);
  });
});
