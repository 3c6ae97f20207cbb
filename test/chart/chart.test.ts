/**
 * The Helm chart, rendered by the real helm over several value sets: lint, Kubernetes schema
 * validation of every object, and the fields that make the deployment work and safe.
 */
import { readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { kubernetesValidatePath, schemaErrors, strictErrors } from './schema.js';
import {
  NAMESPACE,
  OWN_NODE_SELECTION,
  RELEASE,
  TLS_VALUES,
  VALUE_SETS,
  allContainers,
  chartDir,
  configMapFiles,
  find,
  findAll,
  helm,
  helmPath,
  podSpecs,
  podSpec,
  podTemplate,
  probePort,
  render,
  renderError,
  renderSet,
  requireTool,
  valuesDir,
  type Container,
  type Rendered,
} from './support.js';

const runs = requireTool('helm', helmPath, 'HELM_BIN');
const strictRuns = runs && requireTool('kubernetes-validate', kubernetesValidatePath, 'KUBERNETES_VALIDATE_BIN');
// The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas shipped.
const KUBE_VERSIONS = ['1.27.0', '1.37.0'];
const FULL = `${RELEASE}-swift-fetch`;

const rendered = renderSet;

function daemonContainer(r: Rendered): Container {
  const c = podSpec(find(r, 'DaemonSet')).containers.find((x) => x.name === 'daemon');
  if (!c) throw new Error('DaemonSet has no daemon container');
  return c;
}

function daemonConfig(r: Rendered): Record<string, any> {
  return YAML.parse(configMapFiles(r).config) as Record<string, any>;
}

describe.skipIf(!runs)('helm chart', () => {
  describe('helm lint (renders NOTES.txt too)', () => {
    it('passes --strict with the defaults', async () => {
      const { stdout } = await helm(['lint', '--strict', chartDir]);
      expect(stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    });

    it.each(Object.entries(VALUE_SETS).filter(([, files]) => files.length > 0))('passes --strict with %s', async (_name, files) => {
      const args = ['lint', '--strict', chartDir, '--namespace', NAMESPACE];
      for (const f of files) args.push('--values', `${valuesDir}/${f}`);
      const { stdout } = await helm(args);
      expect(stdout).toMatch(/0 chart\(s\) failed/);
    });
  });

  describe('schema validation itself', () => {
    it('rejects a rendered DaemonSet with wrong types or missing required fields, and unknown kinds', async () => {
      const ds = structuredClone(find(await rendered('defaults'), 'DaemonSet')) as any;
      expect(await schemaErrors(ds)).toEqual([]);
      ds.spec.template.spec.containers[0].ports[0].containerPort = 'http';
      ds.spec.template.spec.containers[0].securityContext.runAsUser = 'nobody';
      delete ds.spec.selector;
      const errors = (await schemaErrors(ds)).join('\n');
      expect(errors).toMatch(/containerPort must be integer/);
      expect(errors).toMatch(/runAsUser must be integer/);
      expect(errors).toMatch(/selector/);
      await expect(schemaErrors({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' } })).rejects.toThrow(/no schema registered/);
    });

    it.skipIf(!strictRuns)('rejects a misspelt field in strict mode, which the compiled schemas let through', async () => {
      const ds = structuredClone(find(await rendered('defaults'), 'DaemonSet')) as any;
      const sc = ds.spec.template.spec.containers[0].securityContext;
      sc.readOnlyRootFileSystem = sc.readOnlyRootFilesystem;
      delete sc.readOnlyRootFilesystem;
      expect(await schemaErrors(ds)).toEqual([]);
      expect((await strictErrors([ds], '1.37.0')).join('\n')).toMatch(/readOnlyRootFileSystem' was unexpected/);
    });
  });

  describe.each(Object.keys(VALUE_SETS))('values: %s', (set) => {
    let r: Rendered;
    beforeAll(async () => {
      r = await rendered(set);
    });

    it('renders only objects that validate against the Kubernetes schemas', async () => {
      expect(r.objects.length).toBeGreaterThanOrEqual(5);
      const errors = (await Promise.all(r.objects.map(schemaErrors))).flat();
      expect(errors).toEqual([]);
    });

    it.skipIf(!strictRuns).each(KUBE_VERSIONS)('has no field unknown to Kubernetes %s (strict schemas)', async (v) => {
      expect(await strictErrors(r.objects, v)).toEqual([]);
    });

    it('puts every namespaced object in the release namespace with the chart labels', () => {
      // crds/ is not templated (no release labels) and, like the RBAC for the API sync, cluster-scoped.
      for (const o of r.objects.filter((x) => !['CustomResourceDefinition', 'ClusterRole', 'ClusterRoleBinding'].includes(x.kind))) {
        expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe(NAMESPACE);
        expect(o.metadata.labels?.['app.kubernetes.io/instance'], `${o.kind}/${o.metadata.name}`).toBe(RELEASE);
      }
    });

    it('runs the daemon as a non-root user with a read-only root, no capabilities and RuntimeDefault seccomp', () => {
      const ds = find(r, 'DaemonSet');
      const spec = podSpec(ds);
      const c = daemonContainer(r);
      const sc = c.securityContext!;
      expect(sc.runAsNonRoot).toBe(true);
      expect(Number.isInteger(sc.runAsUser) && (sc.runAsUser as number) > 0).toBe(true);
      expect(sc.readOnlyRootFilesystem).toBe(true);
      expect(sc.allowPrivilegeEscalation).toBe(false);
      expect(sc.capabilities?.drop).toEqual(['ALL']);
      expect(sc.capabilities?.add ?? []).toEqual([]);
      const seccomp = (sc.seccompProfile ?? spec.securityContext?.seccompProfile) as { type: string } | undefined;
      expect(seccomp?.type).toBe('RuntimeDefault');
      expect(spec.securityContext?.runAsNonRoot).toBe(true);
      expect((ds.spec as any).template.spec.automountServiceAccountToken).toBe(false);
    });

    it('gives the only root init container nothing but CAP_CHOWN', () => {
      for (const c of podSpec(find(r, 'DaemonSet')).initContainers ?? []) {
        expect(c.name).toBe('volume-permissions');
        expect(c.command?.[0]).toBe('chown');
        expect(c.securityContext?.capabilities).toEqual({ drop: ['ALL'], add: ['CHOWN'] });
        expect(c.securityContext?.allowPrivilegeEscalation).toBe(false);
        expect(c.securityContext?.readOnlyRootFilesystem).toBe(true);
      }
    });

    it('probes /healthz and /readyz on the port the config tells the daemon to listen on', () => {
      const c = daemonContainer(r);
      const listen = String(daemonConfig(r).listen);
      const port = Number(listen.slice(listen.lastIndexOf(':') + 1));
      expect(c.livenessProbe?.httpGet?.path).toBe('/healthz');
      expect(c.startupProbe?.httpGet?.path).toBe('/healthz');
      expect(c.readinessProbe?.httpGet?.path).toBe('/readyz');
      for (const p of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
        expect(probePort(c, p!.httpGet!.port)).toBe(port);
      }
      expect(c.args).toEqual(['daemon', '--config', '/etc/swift-fetch/config.yaml']);
    });

    it.skipIf(OWN_NODE_SELECTION.has(set))('runs on GPU nodes and tolerates the nvidia.com/gpu taint (sets keeping the default node selection)', () => {
      const spec = podSpec(find(r, 'DaemonSet'));
      expect(spec.tolerations).toContainEqual({ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' });
      expect(spec.nodeSelector).toEqual({ 'nvidia.com/gpu.present': 'true' });
    });

    it('rolls out node by node without surge', () => {
      const strategy = (find(r, 'DaemonSet').spec as any).updateStrategy;
      expect(strategy.type).toBe('RollingUpdate');
      expect(strategy.rollingUpdate.maxUnavailable).toBe(1);
      expect(strategy.rollingUpdate.maxSurge).toBe(0);
    });

    it('passes secrets only by secretKeyRef and never creates a hub token Secret', () => {
      for (const { owner, spec } of podSpecs(r)) {
        for (const c of allContainers(spec)) {
          for (const e of c.env ?? []) {
            if (/TOKEN|SECRET|PASSWORD|KEY/i.test(e.name)) {
              expect(e.value, `${owner.kind}/${c.name} ${e.name}`).toBeUndefined();
              expect(e.valueFrom?.secretKeyRef, `${owner.kind}/${c.name} ${e.name}`).toBeDefined();
            }
          }
        }
      }
      for (const s of findAll(r, 'Secret')) expect([`${FULL}-peer-token`, `${FULL}-api-token`]).toContain(s.metadata.name);
    });

    it('mounts the models key of the ConfigMap as a directory at the modelsFile location', () => {
      const cfg = daemonConfig(r);
      const { configMap, models } = configMapFiles(r);
      const spec = podSpec(find(r, 'DaemonSet'));
      const c = daemonContainer(r);
      const mount = c.volumeMounts!.find((m) => m.mountPath === posix.dirname(cfg.modelsFile));
      expect(mount, 'a mount at dirname(modelsFile)').toBeDefined();
      // Only a whole-directory ConfigMap mount is refreshed by the kubelet; subPath mounts are frozen.
      expect(mount!.subPath).toBeUndefined();
      const vol = spec.volumes!.find((v) => v.name === mount!.name)!;
      expect(vol.configMap?.name).toBe(configMap.metadata.name);
      expect(vol.configMap?.items).toEqual([{ key: 'models.yaml', path: posix.basename(cfg.modelsFile) }]);
      expect(YAML.parse(models)).toBeInstanceOf(Array);
      // The config file itself is the other key, at the path given to --config.
      const cfgMount = c.volumeMounts!.find((m) => m.mountPath === '/etc/swift-fetch/config.yaml')!;
      expect(cfgMount.subPath).toBe('config.yaml');
      expect(spec.volumes!.find((v) => v.name === cfgMount.name)!.configMap?.items).toEqual([{ key: 'config.yaml', path: 'config.yaml' }]);
    });

    it('mounts the config paths it names: store, state dir, imports', () => {
      const cfg = daemonConfig(r);
      const paths = (daemonContainer(r).volumeMounts ?? []).map((m) => m.mountPath);
      for (const k of ['store', 'stateDir', 'imports']) expect(paths, k).toContain(cfg[k]);
    });
  });

  describe('storage', () => {
    it('defaults to node-local hostPath directories for store, state and imports', async () => {
      const spec = podSpec(find(await rendered('defaults'), 'DaemonSet'));
      const byName = Object.fromEntries(spec.volumes!.map((v) => [v.name, v]));
      expect(byName.store!.hostPath).toEqual({ path: '/var/lib/swift-fetch/store', type: 'DirectoryOrCreate' });
      expect(byName.state!.hostPath?.path).toBe('/var/lib/swift-fetch/state');
      expect(byName.imports!.hostPath?.path).toBe('/var/lib/swift-fetch/imports');
      expect(spec.initContainers?.[0]?.command).toEqual(['chown', '10001:10001', '/var/lib/swift-fetch/store', '/var/lib/swift-fetch/state', '/var/lib/swift-fetch/imports']);
    });

    it('uses an existing RWX claim with subPath for the store and keeps state node-local', async () => {
      const r = await rendered('rwx-claim');
      const spec = podSpec(find(r, 'DaemonSet'));
      const byName = Object.fromEntries(spec.volumes!.map((v) => [v.name, v]));
      expect(byName.store!.persistentVolumeClaim).toEqual({ claimName: 'models-rwx' });
      expect(byName.state!.emptyDir).toEqual({ sizeLimit: '2Gi' });
      const mounts = daemonContainer(r).volumeMounts!;
      expect(mounts.find((m) => m.name === 'store')).toMatchObject({ mountPath: '/var/lib/swift-fetch/store', subPath: 'swift-fetch/store' });
      expect(mounts.find((m) => m.name === 'imports')).toMatchObject({ subPath: 'swift-fetch/imports' });
      // No hostPath left to chown.
      expect(spec.initContainers).toBeUndefined();
      expect(daemonConfig(r).gc).toEqual({ maxBytes: '2TiB' });
    });

    it('refuses a pvc store without a claim name', async () => {
      expect(await renderError([], ['storage.store.type=pvc'])).toMatch(/storage\.store\.existingClaim is required/);
    });
  });

  describe('models and hub settings', () => {
    it('renders the model list into models.yaml, not into the config', async () => {
      const r = await rendered('models');
      expect(YAML.parse(configMapFiles(r).models)).toEqual([
        'hf://Qwen/Qwen2.5-0.5B-Instruct',
        { ref: 'ms://Qwen/Qwen2.5-7B-Instruct', include: ['*.json', '*.safetensors'] },
        { ref: 'hf://meta-llama/Llama-3.2-1B@main', exclude: ['original/*'] },
        'Qwen/Qwen2.5-1.5B-Instruct',
      ]);
      const cfg = daemonConfig(r);
      expect(cfg.models).toEqual([]);
      expect(cfg).toMatchObject({ maxRate: '200MB/s', connections: 32, chunkSize: '32MiB', logLevel: 'debug' });
    });

    it('takes hub tokens from the named Secrets and endpoints/proxies from values', async () => {
      const env = daemonContainer(await rendered('models')).env!;
      const byName = Object.fromEntries(env.map((e) => [e.name, e]));
      expect(byName.HF_TOKEN!.valueFrom).toEqual({ secretKeyRef: { name: 'hf-token', key: 'HF_TOKEN', optional: false } });
      expect(byName.MODELSCOPE_API_TOKEN!.valueFrom).toEqual({ secretKeyRef: { name: 'modelscope-token', key: 'token', optional: true } });
      expect(byName.HF_ENDPOINT!.value).toBe('https://hf-mirror.example.internal');
      expect(byName.MODELSCOPE_ENDPOINT).toBeUndefined();
      expect(byName.HTTPS_PROXY!.value).toBe('http://proxy.example.internal:3128');
      expect(byName.NO_PROXY!.value).toContain('.svc');
      const defaults = daemonContainer(await rendered('defaults')).env!.map((e) => e.name);
      expect(defaults).not.toContain('HF_TOKEN');
      expect(defaults).not.toContain('HTTPS_PROXY');
    });

    it('changing only the model list leaves the pod template untouched (no restart)', async () => {
      const a = await render([], ['models={hf://Qwen/Qwen2.5-0.5B-Instruct}']);
      const b = await render([], ['models={hf://Qwen/Qwen2.5-0.5B-Instruct,ms://Qwen/Qwen2.5-7B-Instruct}']);
      expect(configMapFiles(a).models).not.toEqual(configMapFiles(b).models);
      expect(podTemplate(find(a, 'DaemonSet'))).toEqual(podTemplate(find(b, 'DaemonSet')));
      for (const v of Object.values(podTemplate(find(a, 'DaemonSet')).metadata.annotations ?? {})) {
        expect(v).not.toContain('Qwen');
      }
    });

    it('changing the daemon config rolls the pods through the config checksum', async () => {
      const a = await render([], ['daemon.maxRate=100MB/s']);
      const b = await render([], ['daemon.maxRate=200MB/s']);
      const ca = podTemplate(find(a, 'DaemonSet')).metadata.annotations?.['checksum/config'];
      const cb = podTemplate(find(b, 'DaemonSet')).metadata.annotations?.['checksum/config'];
      expect(ca).toMatch(/^[0-9a-f]{64}$/);
      expect(ca).not.toBe(cb);
    });

    it('rejects values that break the schema', async () => {
      expect(await renderError([], ['daemon.logLevel=loud'])).toMatch(/logLevel/);
      expect(await renderError([], ['models={not a ref}'])).toMatch(/models/);
      expect(await renderError([], ['daemon.port=70000'])).toMatch(/port/);
      expect(await renderError([], ['storage.store.type=nfs'])).toMatch(/type/);
      expect(await renderError([], ['unknownKey=1'])).toMatch(/unknownKey/);
    });
  });

  describe('peers', () => {
    it('wires the headless Service to peers.dns and publishes not-ready daemons', async () => {
      const r = await rendered('defaults');
      const svc = find(r, 'Service', '-peers');
      const spec = svc.spec as any;
      expect(spec.clusterIP).toBe('None');
      expect(spec.publishNotReadyAddresses).toBe(true);
      const cfg = daemonConfig(r);
      expect(cfg.peers.dns).toBe(`${svc.metadata.name}.${NAMESPACE}.svc.cluster.local`);
      const c = daemonContainer(r);
      expect(cfg.peers.port).toBe(probePort(c, 'http'));
      expect(spec.ports[0].port).toBe(cfg.peers.port);
      expect(spec.ports[0].targetPort).toBe('http');
      // The Service selects exactly the daemon pods.
      expect(podTemplate(find(r, 'DaemonSet')).metadata.labels).toMatchObject(spec.selector);
      expect(spec.selector['app.kubernetes.io/component']).toBe('daemon');
    });

    it('generates a peer token Secret and mounts it at peers.tokenFile', async () => {
      const r = await rendered('defaults');
      const cfg = daemonConfig(r);
      const secret = find(r, 'Secret', '-peer-token');
      const token = Buffer.from((secret.data as Record<string, string>).token!, 'base64').toString();
      expect(token).toMatch(/^[A-Za-z0-9]{48}$/);
      expect(secret.metadata.annotations?.['helm.sh/resource-policy']).toBe('keep');
      const mount = daemonContainer(r).volumeMounts!.find((m) => m.mountPath === posix.dirname(cfg.peers.tokenFile))!;
      expect(mount.readOnly).toBe(true);
      const vol = podSpec(find(r, 'DaemonSet')).volumes!.find((v) => v.name === mount.name)!;
      expect(vol.secret).toMatchObject({ secretName: secret.metadata.name, items: [{ key: 'token', path: posix.basename(cfg.peers.tokenFile) }] });
    });

    it('uses an existing peer token Secret instead of generating one', async () => {
      const r = await rendered('monitoring');
      expect(findAll(r, 'Secret').filter((x) => x.metadata.name.endsWith('-peer-token'))).toEqual([]);
      const vol = podSpec(find(r, 'DaemonSet')).volumes!.find((v) => v.name === 'peer-token')!;
      expect(vol.secret).toMatchObject({ secretName: 'swift-fetch-peer-token', items: [{ key: 'peer-token', path: 'token' }] });
      expect(daemonConfig(r).peers.static).toEqual(['http://10.0.0.2:7070']);
    });

    it('drops the peers section, token and hostPort when peers are off', async () => {
      const r = await rendered('peers-off');
      expect(daemonConfig(r).peers).toBeUndefined();
      expect(findAll(r, 'Secret').map((x) => x.metadata.name)).toEqual([`${FULL}-api-token`]);
      expect(daemonContainer(r).volumeMounts!.map((m) => m.name)).not.toContain('peer-token');
      expect(daemonContainer(r).ports![0]!.hostPort).toBeUndefined();
      // The Service stays: it is also the metrics target.
      expect(find(r, 'Service', '-peers')).toBeDefined();
    });
  });

  describe('node API security (issue 12)', () => {
    const initOf = (r: Rendered) => podSpec(find(r, 'Deployment', '-inference')).initContainers!.find((c) => c.name === 'wait-for-model')!;

    it('generates the API token once, mounts it at api.tokenFile in the daemon and in the init container only', async () => {
      const r = await rendered('inference');
      const cfg = daemonConfig(r);
      const secret = find(r, 'Secret', '-api-token');
      expect(Buffer.from((secret.data as Record<string, string>).token!, 'base64').toString()).toMatch(/^[A-Za-z0-9]{48}$/);
      expect(secret.metadata.annotations?.['helm.sh/resource-policy']).toBe('keep');
      // A new install draws a new token; an upgrade keeps the one in the cluster (lookup, as for the peer token).
      expect((find(await render(['inference.yaml']), 'Secret', '-api-token').data as Record<string, string>).token).not.toBe((secret.data as Record<string, string>).token);
      expect(readFileSync(`${chartDir}/templates/secret-api-token.yaml`, 'utf8')).toMatch(/lookup "v1" "Secret" \.Release\.Namespace \$name/);

      const mount = daemonContainer(r).volumeMounts!.find((m) => m.mountPath === posix.dirname(cfg.api.tokenFile))!;
      expect(mount.readOnly).toBe(true);
      const vol = podSpec(find(r, 'DaemonSet')).volumes!.find((v) => v.name === mount.name)!;
      expect(vol.secret).toMatchObject({ secretName: secret.metadata.name, items: [{ key: 'token', path: posix.basename(cfg.api.tokenFile) }] });

      const inf = podSpec(find(r, 'Deployment', '-inference'));
      const wait = initOf(r);
      const flag = wait.args!.indexOf('--daemon-token-file');
      expect(wait.args![flag + 1]).toBe(cfg.api.tokenFile);
      const initMount = wait.volumeMounts!.find((m) => m.mountPath === posix.dirname(cfg.api.tokenFile))!;
      expect(inf.volumes!.find((v) => v.name === initMount.name)!.secret).toMatchObject({ secretName: secret.metadata.name });
      for (const c of inf.containers) expect(c.volumeMounts!.map((m) => m.name)).not.toContain(initMount.name);
    });

    it('uses an existing API token Secret, and passes api settings into the config', async () => {
      const r = await render([], ['api.token.existingSecret=node-api', 'api.token.secretKey=t', 'api.protectReads=true', 'api.maxRequested=8', 'api.requestsPerMinute=0']);
      expect(findAll(r, 'Secret').filter((x) => x.metadata.name.endsWith('-api-token'))).toEqual([]);
      expect(podSpec(find(r, 'DaemonSet')).volumes!.find((v) => v.name === 'api-token')!.secret).toMatchObject({ secretName: 'node-api', items: [{ key: 't', path: 'token' }] });
      expect(daemonConfig(r).api).toEqual({ tokenFile: '/etc/swift-fetch/api-token/token', protectReads: true, maxRequested: 8, requestsPerMinute: 0 });
      expect(await renderError([], ['api.maxRequested=0'])).toMatch(/maxRequested/);
    });

    it('ships a NetworkPolicy: the daemon port only from the release\'s pods, nodeCIDRs and extraFrom', async () => {
      const r = await rendered('inference');
      const np = find(r, 'NetworkPolicy');
      const spec = np.spec as { podSelector: { matchLabels: Record<string, string> }; policyTypes: string[]; ingress: Array<{ from: any[]; ports: any[] }> };
      expect(podTemplate(find(r, 'DaemonSet')).metadata.labels).toMatchObject(spec.podSelector.matchLabels);
      expect(spec.podSelector.matchLabels['app.kubernetes.io/component']).toBe('daemon');
      expect(spec.policyTypes).toEqual(['Ingress']);
      expect(spec.ingress).toHaveLength(1);
      expect(spec.ingress[0]!.ports).toEqual([{ port: probePort(daemonContainer(r), 'http'), protocol: 'TCP' }]);
      const from = spec.ingress[0]!.from;
      expect(from).toHaveLength(1);
      // The selector admits the daemons (peers) and the inference pods (their init containers), nothing wider.
      const sel = from[0].podSelector.matchLabels as Record<string, string>;
      expect(sel).toEqual({ 'app.kubernetes.io/name': 'swift-fetch', 'app.kubernetes.io/instance': RELEASE });
      expect(podTemplate(find(r, 'Deployment', '-inference')).metadata.labels).toMatchObject(sel);
      expect(from[0].namespaceSelector).toBeUndefined();

      const wide = find(await render(TLS_VALUES), 'NetworkPolicy').spec as typeof spec;
      expect(wide.ingress[0]!.from.slice(1)).toEqual([
        { ipBlock: { cidr: '10.0.0.0/16' } },
        { ipBlock: { cidr: 'fd00::/64' } },
        { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
      ]);
      expect(findAll(await render([], ['networkPolicy.enabled=false']), 'NetworkPolicy')).toEqual([]);
    });

    it('with tls: every object validates (the Certificate against cert-manager\'s schema)', async () => {
      const r = await render(TLS_VALUES);
      expect((await Promise.all(r.objects.map(schemaErrors))).flat()).toEqual([]);
      if (strictRuns) for (const v of KUBE_VERSIONS) expect(await strictErrors(r.objects, v)).toEqual([]);
      // The schema check itself notices a broken Certificate.
      const cert = structuredClone(find(r, 'Certificate'));
      (cert.spec as Record<string, unknown>).dnsNames = 'not a list';
      expect(await schemaErrors(cert)).not.toEqual([]);
    });

    it('with tls: a cert-manager Certificate for the peers name, mounted, probed over HTTPS, trusted by init, peers and Prometheus', async () => {
      const r = await render(TLS_VALUES);
      const cfg = daemonConfig(r);
      const cert = find(r, 'Certificate');
      const certSpec = cert.spec as { secretName: string; dnsNames: string[]; issuerRef: Record<string, string> };
      expect(certSpec.issuerRef).toEqual({ name: 'swift-fetch-ca', kind: 'ClusterIssuer', group: 'cert-manager.io' });
      expect(certSpec.dnsNames).toContain(cfg.peers.dns);
      const ds = podSpec(find(r, 'DaemonSet'));
      const c = daemonContainer(r);
      const mount = c.volumeMounts!.find((m) => m.mountPath === posix.dirname(cfg.tls.certFile))!;
      expect(mount.subPath).toBeUndefined(); // a directory mount follows renewals
      expect(ds.volumes!.find((v) => v.name === mount.name)!.secret).toMatchObject({
        secretName: certSpec.secretName,
        items: [{ key: 'tls.crt', path: 'tls.crt' }, { key: 'tls.key', path: 'tls.key' }, { key: 'ca.crt', path: 'ca.crt' }],
      });
      expect(posix.dirname(cfg.tls.keyFile)).toBe(mount.mountPath);
      expect(cfg.peers.caFile).toBe(`${mount.mountPath}/ca.crt`);
      for (const p of [c.livenessProbe, c.readinessProbe, c.startupProbe]) expect((p!.httpGet as { scheme?: string }).scheme).toBe('HTTPS');

      const wait = initOf(r);
      expect(wait.args).toContain('https://$(HOST_IP):7070');
      const ca = wait.args![wait.args!.indexOf('--daemon-ca-file') + 1]!;
      expect(wait.args![wait.args!.indexOf('--daemon-server-name') + 1]).toBe(cfg.peers.dns);
      const caMount = wait.volumeMounts!.find((m) => m.mountPath === posix.dirname(ca))!;
      // The inference pod gets the CA, never the daemons' key.
      expect(podSpec(find(r, 'Deployment', '-inference')).volumes!.find((v) => v.name === caMount.name)!.secret).toEqual({ secretName: certSpec.secretName, items: [{ key: 'ca.crt', path: posix.basename(ca) }] });

      const ep = (find(r, 'ServiceMonitor').spec as { endpoints: Array<Record<string, any>> }).endpoints[0]!;
      expect(ep.scheme).toBe('https');
      expect(ep.tlsConfig).toEqual({ serverName: cfg.peers.dns, ca: { secret: { name: certSpec.secretName, key: 'ca.crt' } } });
      const test = find(r, 'Pod', '-test-readyz');
      expect(podSpec(test).containers[0]!.args).toEqual(expect.arrayContaining(['--cacert', `https://${cfg.peers.dns}:7070/readyz`]));
    });

    it('with tls: takes an existing Secret instead, and refuses what cannot work', async () => {
      const r = await render([], ['tls.enabled=true', 'tls.existingSecret=my-tls']);
      expect(findAll(r, 'Certificate')).toEqual([]);
      expect(podSpec(find(r, 'DaemonSet')).volumes!.find((v) => v.name === 'tls')!.secret).toMatchObject({ secretName: 'my-tls' });
      expect(await renderError([], ['tls.enabled=true'])).toMatch(/tls\.enabled needs tls\.existingSecret or tls\.certManager\.issuerRef\.name/);
      expect(await renderError(['inference-mirror.yaml'], ['tls.enabled=true', 'tls.existingSecret=my-tls'])).toMatch(/inference\.mode=mirror with tls\.enabled/);
    });
  });

  describe('monitoring', () => {
    it('scrapes /metrics on the daemon port through a ServiceMonitor', async () => {
      const r = await rendered('monitoring');
      const sm = find(r, 'ServiceMonitor');
      expect(sm.metadata.labels?.release).toBe('kube-prometheus-stack');
      const spec = sm.spec as any;
      expect(spec.endpoints[0]).toMatchObject({ port: 'http', path: '/metrics' });
      const svc = find(r, 'Service', '-peers');
      expect(svc.metadata.labels).toMatchObject(spec.selector.matchLabels);
      expect((svc.spec as any).ports.map((p: { name: string }) => p.name)).toContain('http');
    });

    it('ships a Grafana dashboard ConfigMap for the sidecar', async () => {
      const r = await rendered('monitoring');
      const cm = find(r, 'ConfigMap', '-dashboard');
      expect(cm.metadata.labels?.grafana_dashboard).toBe('1');
      const dash = JSON.parse((cm.data as Record<string, string>)['swift-fetch.json']!);
      expect(dash.uid).toBe('swift-fetch');
      expect(dash.panels.length).toBeGreaterThan(3);
    });

    it('renders neither by default', async () => {
      const r = await rendered('defaults');
      expect(findAll(r, 'ServiceMonitor')).toEqual([]);
      expect(r.objects.filter((o) => o.metadata.name.endsWith('-dashboard'))).toEqual([]);
    });
  });

  describe('helm test', () => {
    it('curls /readyz through the peers Service', async () => {
      const r = await rendered('defaults');
      const pod = r.objects.find((o) => o.kind === 'Pod' && o.metadata.annotations?.['helm.sh/hook'] === 'test')!;
      expect(pod).toBeDefined();
      const c = podSpec(pod).containers[0]!;
      expect(c.command).toEqual(['curl']);
      expect(c.args).toContain(`http://${FULL}-peers.${NAMESPACE}.svc.cluster.local:7070/readyz`);
      expect(c.args).toContain('--fail');
    });
  });
});

/**
 * Keys of values.yaml without a helm-docs style comment (`# -- ...`) on themselves or on an
 * enclosing key. Structural keys (image:, daemon:) carry none, so their leaves each need one; a
 * Kubernetes object passed through whole (resources:, tolerations:) is documented once, above it.
 */
function undocumentedKeys(text: string): string[] {
  const doc = YAML.parseDocument(text);
  const out: string[] = [];
  const isDoc = (c: string | null | undefined) => typeof c === 'string' && /^\s*--\s/.test(c.split('\n').find((l) => /^\s*--\s/.test(l)) ?? '');
  const walk = (map: YAML.YAMLMap, path: string[]) => {
    map.items.forEach((pair, i) => {
      const key = pair.key as YAML.Scalar;
      // The yaml parser may hang a comment above a map's first key on the map itself.
      const documented = isDoc(key.commentBefore) || (i === 0 && isDoc(map.commentBefore));
      const p = [...path, String(key.value)];
      if (documented) return;
      if (YAML.isMap(pair.value) && pair.value.items.length > 0) walk(pair.value, p);
      else out.push(p.join('.'));
    });
  };
  walk(doc.contents as YAML.YAMLMap, []);
  return out;
}

describe('values.yaml', () => {
  const text = readFileSync(`${chartDir}/values.yaml`, 'utf8');

  it('documents every key with a comment (on the key or an enclosing block)', () => {
    expect(undocumentedKeys(text)).toEqual([]);
    // The check itself notices a key without one.
    expect(undocumentedKeys(text.replace(/^daemon:\n/m, 'daemon:\n  sneaky: 1\n'))).toEqual(['daemon.sneaky']);
  });
});
