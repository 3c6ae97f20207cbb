/**
 * The rendered chart as podman pods: `helm template` output -> Pod YAML that `podman kube play`
 * (podman 4.3) runs on this machine, which stands in for one Kubernetes node.
 *
 * The conversion is generic: it takes whatever containers, volumes and env the templates render,
 * and changes only what podman cannot do or what a kubelet would have filled in. Each change is
 * listed here and the tests check the original from the rendered YAML instead:
 *  - network: every pod runs in the host's network namespace, the node (loopback only: the chart
 *    is rendered with the daemon listening on 127.0.0.1). `status.hostIP` and `status.podIP` are
 *    127.0.0.1, `spec.nodeName` is the node's name: podman resolves none of these fieldRefs.
 *  - Service DNS: each rendered Service's cluster name resolves to 127.0.0.1 through an /etc/hosts
 *    file mounted into every container (podman 4.3 drops hostAliases in the host network), so the
 *    daemon's peer discovery never asks a DNS server off this machine.
 *  - container ports are dropped: podman 4.3 turns them into port mappings, which it refuses in the
 *    host network (where they mean nothing: the port is the node's).
 *  - annotations longer than 63 characters (the config checksum) are dropped: podman 4.3 holds
 *    annotation values to the limit of label values.
 *  - `$(VAR)` in command/args is expanded from the container's env, as the kubelet does.
 *  - hostPath volumes become podman named volumes keyed by the host path (the node's disk, shared
 *    by all pods on it); emptyDir volumes become named volumes of their pod (podman 4.3 gives each
 *    container its own anonymous volume, so an init container could not hand files to the main one).
 *  - subPath mounts (ignored by podman 4.3) of ConfigMap and Secret keys become files written here
 *    and bind-mounted read-only.
 *  - probes are removed (podman turns liveness probes into `curl` healthchecks, and the image has no
 *    curl; readiness and startup probes it ignores): the tests request each probe's path themselves.
 *  - Secret volumes get an explicit `optional: false` (podman 4.3 dereferences the field unchecked).
 *    podman 4.3 writes a Secret's data into the volume still base64-encoded (a kubelet decodes
 *    it), so the Secrets handed to podman carry their data already decoded: the files then hold
 *    the bytes a kubelet would write (the daemon compares the API token it reads with what its
 *    clients send). podman ignores defaultMode: the tests check the files are read-only instead.
 *  - init containers are podman's "always" kind: its default ("once") removes each after it exits,
 *    which races with the container's own clean-up in podman 4.3 and fails the play at random;
 *    kept, their exit codes and logs can be read. (test/image/node.ts starts them, in order.)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { chartDir, type Container, type EnvVar, helm, type K8sObject, type PodSpec, podSpec, type Volume } from '../chart/support.js';

export const NODE_IP = '127.0.0.1';

/** A Secret as podman 4.3 must be given it to write what a kubelet would (see above); others unchanged. */
function decodedForPodman(o: K8sObject): K8sObject {
  if (o.kind !== 'Secret' || !o.data) return o;
  const data = Object.fromEntries(Object.entries(o.data as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
  return { ...o, data };
}
/** The chart's default clusterDomain, which the tests render with. */
const CLUSTER_DOMAIN = 'cluster.local';

export interface Node {
  /** The node's name (spec.nodeName). */
  name: string;
  /** Prefix of the podman volumes that stand for the node's disk and the pods' emptyDirs. */
  volumePrefix: string;
  /** A host directory for files the conversion writes (subPath mounts). */
  dir: string;
}

/** What one converted pod needs from podman: the YAML to play and the objects it creates. */
export interface PlayablePod {
  name: string;
  /** The pod's own spec as rendered (probes, security context: what the tests check from YAML). */
  rendered: PodSpec;
  /** Multi-document YAML: the ConfigMaps and Secrets the pod uses, then the Pod. */
  yaml: string;
  /** Named volumes by the rendered volume's name (hostPath and emptyDir volumes). */
  volumes: Record<string, string>;
  /** Podman volumes created for ConfigMap and Secret volumes (named after the object). */
  objectVolumes: string[];
  /** Podman secrets the play creates. */
  secrets: string[];
}

type AnyVolume = Volume & { secret?: { secretName: string; optional?: boolean; items?: { key: string; path: string }[]; defaultMode?: number } };

/**
 * `helm template` of the chart with `--set` pairs, parsed as YAML 1.1 like Kubernetes does (a
 * rendered `defaultMode: 0440` is octal there, and 440 under YAML 1.2).
 */
export async function renderChart(release: string, namespace: string, set: string[]): Promise<K8sObject[]> {
  const args = ['template', release, chartDir, '--namespace', namespace, ...set.flatMap((s) => ['--set', s])];
  const { stdout } = await helm(args);
  return YAML.parseAllDocuments(stdout, { version: '1.1' })
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`helm printed invalid YAML: ${d.errors[0]!.message}`);
      return d.toJS() as K8sObject | null;
    })
    .filter((o): o is K8sObject => o !== null);
}

const sanitize = (s: string) => s.replace(/[^a-zA-Z0-9_.-]+/g, '-').replace(/^-+|-+$/g, '');

/** Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`, others stay. */
export function expandVars(s: string, env: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) => {
    if (m === '$$') return '$';
    return name !== undefined && name in env ? env[name]! : m;
  });
}

/**
 * What the kubelet's downward API gives on this node for the fieldRefs podman lacks; null for those
 * podman resolves itself.
 */
function fieldValue(path: string, node: Node): string | null {
  if (path === 'spec.nodeName') return node.name;
  if (path === 'status.hostIP' || path === 'status.podIP') return NODE_IP;
  if (/^metadata\.(name|uid|labels\[|annotations\[)/.test(path)) return null;
  throw new Error(`fieldRef ${path}: teach test/image/kube.ts what the kubelet puts there`);
}

function convertEnv(env: EnvVar[] | undefined, node: Node): { env: EnvVar[] | undefined; known: Record<string, string> } {
  const known: Record<string, string> = {};
  if (!env) return { env, known };
  const out = env.map((e) => {
    const path = e.valueFrom?.fieldRef?.fieldPath;
    if (path === undefined) {
      if (e.value !== undefined) known[e.name] = expandVars(e.value, known);
      return e.value !== undefined ? { name: e.name, value: known[e.name]! } : e;
    }
    const v = fieldValue(path, node);
    if (v === null) return e;
    known[e.name] = v;
    return { name: e.name, value: v };
  });
  return { env: out, known };
}

function lookup(objects: K8sObject[], kind: string, name: string): K8sObject {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`the pod uses ${kind} ${name}, which the chart did not render`);
  return o;
}

/** The bytes a ConfigMap or Secret volume shows at `path` inside its mount. */
function volumeFile(v: AnyVolume, path: string, objects: K8sObject[]): Buffer {
  if (v.configMap) {
    const cm = lookup(objects, 'ConfigMap', v.configMap.name);
    const key = v.configMap.items?.find((i) => i.path === path)?.key ?? path;
    const data = (cm.data as Record<string, string> | undefined)?.[key];
    if (data === undefined) throw new Error(`ConfigMap ${v.configMap.name} has no key ${key}`);
    return Buffer.from(data);
  }
  if (v.secret) {
    const s = lookup(objects, 'Secret', v.secret.secretName);
    const key = v.secret.items?.find((i) => i.path === path)?.key ?? path;
    const data = (s.data as Record<string, string> | undefined)?.[key];
    if (data === undefined) throw new Error(`Secret ${v.secret.secretName} has no key ${key}`);
    return Buffer.from(data, 'base64');
  }
  throw new Error(`volume ${v.name}: subPath is only converted for ConfigMap and Secret volumes`);
}

function convertContainer(c: Container, ctx: { node: Node; pod: string; objects: K8sObject[]; volumes: AnyVolume[]; extraVolumes: AnyVolume[] }): Container {
  const out: Container = structuredClone(c);
  const { env, known } = convertEnv(out.env, ctx.node);
  if (env) out.env = env;
  if (out.command) out.command = out.command.map((a) => expandVars(a, known));
  if (out.args) out.args = out.args.map((a) => expandVars(a, known));
  delete out.livenessProbe;
  delete out.readinessProbe;
  delete out.startupProbe;
  delete out.ports;
  out.volumeMounts = out.volumeMounts?.map((m) => {
    if (!m.subPath) return m;
    const v = ctx.volumes.find((x) => x.name === m.name);
    if (!v) throw new Error(`container ${c.name} mounts ${m.name}, which the pod does not define`);
    const file = join(ctx.node.dir, ctx.pod, c.name, sanitize(m.mountPath));
    mkdirSync(join(ctx.node.dir, ctx.pod, c.name), { recursive: true });
    writeFileSync(file, volumeFile(v, m.subPath, ctx.objects), { mode: 0o644 });
    const name = sanitize(`${m.name}-${m.subPath}`).toLowerCase();
    ctx.extraVolumes.push({ name, hostPath: { path: file, type: 'File' } });
    return { name, mountPath: m.mountPath, readOnly: true };
  });
  return out;
}

/** The node's /etc/hosts: localhost, and every rendered Service's cluster DNS name on this node. */
function hostsFile(objects: K8sObject[]): string {
  const services = objects
    .filter((o) => o.kind === 'Service')
    .map((o) => `${o.metadata.name}.${o.metadata.namespace ?? 'default'}.svc.${CLUSTER_DOMAIN}`);
  return [`127.0.0.1 localhost`, ...services.map((h) => `${NODE_IP} ${h}`)].join('\n') + '\n';
}

/**
 * One rendered workload (DaemonSet, Deployment, ...) as a Pod podman can play on `node`, with the
 * ConfigMaps and Secrets it references. `name` becomes the pod's name (podman names its
 * containers `<pod>-<container>`).
 */
export function toPlayablePod(
  owner: K8sObject,
  objects: K8sObject[],
  node: Node,
  name: string,
  /** Applied to each converted main (not init) container, e.g. to swap its command for a check. */
  main: (c: Container) => Container = (c) => c,
): PlayablePod {
  const rendered = podSpec(owner);
  const template = owner.kind === 'Pod' ? { metadata: owner.metadata } : (owner.spec as { template: { metadata: K8sObject['metadata'] } }).template;
  const spec = structuredClone(rendered) as PodSpec & Record<string, unknown>;
  const volumes = (spec.volumes ?? []) as AnyVolume[];
  const namedVolumes: Record<string, string> = {};
  const objectVolumes = new Set<string>();
  const usedObjects: K8sObject[] = [];
  const extraVolumes: AnyVolume[] = [];

  const converted: AnyVolume[] = volumes.map((v) => {
    if (v.hostPath) {
      const claimName = `${node.volumePrefix}-node-${sanitize(v.hostPath.path)}`.toLowerCase();
      namedVolumes[v.name] = claimName;
      return { name: v.name, persistentVolumeClaim: { claimName } };
    }
    if (v.emptyDir) {
      const claimName = `${node.volumePrefix}-${name}-${v.name}`.toLowerCase();
      namedVolumes[v.name] = claimName;
      return { name: v.name, persistentVolumeClaim: { claimName } };
    }
    if (v.configMap) {
      usedObjects.push(lookup(objects, 'ConfigMap', v.configMap.name));
      objectVolumes.add(v.configMap.name);
      return v;
    }
    if (v.secret) {
      usedObjects.push(lookup(objects, 'Secret', v.secret.secretName));
      objectVolumes.add(v.secret.secretName);
      return { ...v, secret: { optional: false, ...v.secret } };
    }
    if (v.persistentVolumeClaim) {
      namedVolumes[v.name] = v.persistentVolumeClaim.claimName;
      return v;
    }
    throw new Error(`volume ${v.name}: no podman equivalent converted for ${Object.keys(v).filter((k) => k !== 'name').join(', ')}`);
  });

  const ctx = { node, pod: name, objects, volumes, extraVolumes };
  spec.initContainers = spec.initContainers?.map((c) => convertContainer(c, ctx));
  spec.containers = spec.containers.map((c) => main(convertContainer(c, ctx)));
  spec.hostNetwork = true;
  delete spec.dnsPolicy;
  delete spec.hostAliases;
  const hosts = join(node.dir, name, 'hosts');
  mkdirSync(join(node.dir, name), { recursive: true });
  writeFileSync(hosts, hostsFile(objects));
  extraVolumes.push({ name: 'cluster-dns-hosts', hostPath: { path: hosts, type: 'File' } });
  for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
    c.volumeMounts = [...(c.volumeMounts ?? []), { name: 'cluster-dns-hosts', mountPath: '/etc/hosts', readOnly: true }];
  }
  spec.volumes = [...converted, ...extraVolumes];

  const annotations: Record<string, string> = Object.fromEntries(Object.entries(template.metadata.annotations ?? {}).filter(([, v]) => v.length <= 63));
  annotations['io.podman.annotations.init.container.type'] = 'always';
  const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name, labels: template.metadata.labels ?? {}, annotations }, spec };
  const unique = [...new Map(usedObjects.map((o) => [`${o.kind}/${o.metadata.name}`, o])).values()].map(decodedForPodman);
  return {
    name,
    rendered,
    yaml: [...unique, pod].map((d) => YAML.stringify(d)).join('---\n'),
    volumes: namedVolumes,
    objectVolumes: [...objectVolumes],
    secrets: unique.filter((o) => o.kind === 'Secret').map((o) => o.metadata.name),
  };
}
