/**
 * What the kubelet would run for one container of a rendered pod spec, decided without running
 * anything: the argv (image ENTRYPOINT/CMD against `command`/`args`), the environment (image ENV,
 * then the spec's `env` with downward-API, Secret and ConfigMap references resolved and `$(VAR)`
 * expanded), the user and groups, the security switches and the volume mounts.
 *
 * Only the parts of the kubelet's behaviour the chart relies on are modelled; anything else the
 * spec asks for (an unknown fieldRef, a volume type we cannot materialise, `envFrom`) is an error
 * rather than something quietly skipped, so a new chart feature cannot slip past the topology test.
 */
import type { Container, K8sObject, PodSpec } from '../chart/support.js';

/** The parts of an OCI image config the kubelet combines with the spec. */
export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  /** ENV in declaration order (PATH included). */
  env: Array<[string, string]>;
  /** USER uid[:gid]; undefined means root. */
  user?: { uid: number; gid?: number };
  workdir: string;
  /** HOME the runtime sets when the spec does not (from the image's passwd entry for the user). */
  home: string;
}

/** Facts of the node and pod the downward API hands out. */
export interface PodFacts {
  hostIP: string;
  podIP: string;
  nodeName: string;
  podName: string;
  namespace: string;
}

export interface MountPlan {
  volume: string;
  mountPath: string;
  readOnly: boolean;
  subPath?: string;
}

export interface ContainerPlan {
  name: string;
  argv: string[];
  env: Array<[string, string]>;
  uid: number;
  gid: number;
  /** Supplementary groups: fsGroup and supplementalGroups. */
  groups: number[];
  readOnlyRootFilesystem: boolean;
  /** allowPrivilegeEscalation: false (no_new_privs). */
  noNewPrivs: boolean;
  /** Capabilities left in the bounding set (lower case, without CAP_), [] for none. */
  capabilities: string[];
  mounts: MountPlan[];
  workdir: string;
}

/** Linux capabilities a container runtime grants by default (containerd / CRI-O defaults). */
const RUNTIME_DEFAULT_CAPS = [
  'chown', 'dac_override', 'fsetid', 'fowner', 'mknod', 'net_raw', 'setgid', 'setuid', 'setfcap', 'setpcap', 'net_bind_service', 'sys_chroot', 'kill', 'audit_write',
];

/**
 * The kubelet's `$(VAR)` expansion (k8s.io/kubernetes third_party/forked/golang/expansion):
 * `$(NAME)` becomes the value when NAME is known and stays verbatim otherwise, `$$` is a
 * literal `$`, and a `$` before anything else is kept.
 */
export function expandVars(input: string, lookup: (name: string) => string | undefined): string {
  let out = '';
  for (let i = 0; i < input.length; i++) {
    const c = input[i]!;
    if (c !== '$' || i + 1 >= input.length) {
      out += c;
      continue;
    }
    const next = input[i + 1]!;
    if (next === '$') {
      out += '$';
      i++;
      continue;
    }
    if (next === '(') {
      const close = input.indexOf(')', i + 2);
      if (close < 0) {
        out += input.slice(i);
        break;
      }
      const name = input.slice(i + 2, close);
      const v = lookup(name);
      out += v ?? `$(${name})`;
      i = close;
      continue;
    }
    out += c;
  }
  return out;
}

function fieldRef(path: string, facts: PodFacts): string {
  const values: Record<string, string> = {
    'status.hostIP': facts.hostIP,
    'status.podIP': facts.podIP,
    'spec.nodeName': facts.nodeName,
    'metadata.name': facts.podName,
    'metadata.namespace': facts.namespace,
  };
  const v = values[path];
  if (v === undefined) throw new Error(`the topology harness does not know fieldRef ${path}`);
  return v;
}

function objectData(objects: K8sObject[], kind: 'Secret' | 'ConfigMap', name: string): Record<string, string> | undefined {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) return undefined;
  const data = (o.data ?? {}) as Record<string, string>;
  if (kind === 'ConfigMap') return data;
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
}

/**
 * The container's environment in the order the kubelet builds it: image ENV first, then each
 * spec entry, whose `$(VAR)` references see the entries before it (and the image's). Secret and
 * ConfigMap keys come from the rendered objects; an optional reference that does not resolve is
 * left out, a required one is an error (the kubelet would not start the container).
 */
export function resolveEnv(c: Container, image: ImageConfig, objects: K8sObject[], facts: PodFacts): Array<[string, string]> {
  if ((c as { envFrom?: unknown }).envFrom) throw new Error(`${c.name}: envFrom is not modelled by the topology harness`);
  const env = new Map<string, string>(image.env);
  for (const e of c.env ?? []) {
    let value: string | undefined;
    const from = e.valueFrom;
    const ref = from?.secretKeyRef ?? from?.configMapKeyRef;
    if (from?.fieldRef) value = fieldRef(from.fieldRef.fieldPath, facts);
    else if (ref) {
      const kind = from?.secretKeyRef ? 'Secret' : 'ConfigMap';
      value = objectData(objects, kind, ref.name)?.[ref.key];
      if (value === undefined && !ref.optional) throw new Error(`${c.name}: env ${e.name} needs ${kind} ${ref.name} key ${ref.key}, which the release does not create`);
      if (value === undefined) continue;
    } else if (from) {
      throw new Error(`${c.name}: env ${e.name} uses a valueFrom the topology harness does not model`);
    } else {
      value = expandVars(e.value ?? '', (n) => env.get(n));
    }
    env.set(e.name, value);
  }
  return [...env.entries()];
}

/**
 * ENTRYPOINT/CMD against command/args, as the kubelet combines them: `command` replaces the
 * entrypoint and drops CMD; `args` alone replaces CMD. Both are `$(VAR)`-expanded with the
 * container's environment.
 */
export function resolveArgv(c: Container, image: ImageConfig, env: Array<[string, string]>): string[] {
  const vars = new Map(env);
  const expand = (xs: string[]) => xs.map((x) => expandVars(String(x), (n) => vars.get(n)));
  if (c.command && c.command.length > 0) return [...expand(c.command), ...expand(c.args ?? [])];
  if (c.args) return [...image.entrypoint, ...expand(c.args)];
  return [...image.entrypoint, ...image.cmd];
}

type SecurityContext = Record<string, unknown> & { capabilities?: { drop?: string[]; add?: string[] } };

/** Everything the kubelet decides for one container (see ContainerPlan). */
export function planContainer(spec: PodSpec, c: Container, image: ImageConfig, objects: K8sObject[], facts: PodFacts): ContainerPlan {
  const pod = (spec.securityContext ?? {}) as SecurityContext;
  const own = (c.securityContext ?? {}) as SecurityContext;
  const pick = <T>(k: string): T | undefined => (own[k] ?? pod[k]) as T | undefined;
  const uid = pick<number>('runAsUser') ?? image.user?.uid ?? 0;
  const gid = pick<number>('runAsGroup') ?? image.user?.gid ?? 0;
  if (pick<boolean>('runAsNonRoot') && uid === 0) {
    throw new Error(`${c.name}: runAsNonRoot is set but the container would run as root (the kubelet refuses to start it)`);
  }
  const groups = [...((pod.supplementalGroups as number[] | undefined) ?? [])];
  if (typeof pod.fsGroup === 'number') groups.push(pod.fsGroup);
  const caps = own.capabilities ?? {};
  const drop = (caps.drop ?? []).map((x) => x.toLowerCase());
  let capabilities = drop.includes('all') ? [] : RUNTIME_DEFAULT_CAPS.filter((x) => !drop.includes(x));
  capabilities = [...new Set([...capabilities, ...(caps.add ?? []).map((x) => x.toLowerCase())])];
  if (own.privileged) throw new Error(`${c.name}: privileged containers are not modelled`);

  const env = resolveEnv(c, image, objects, facts);
  if (!env.some(([k]) => k === 'HOME')) env.push(['HOME', image.home]);
  const mounts = (c.volumeMounts ?? []).map((m) => ({
    volume: m.name,
    mountPath: m.mountPath,
    readOnly: m.readOnly === true,
    ...(m.subPath ? { subPath: m.subPath } : {}),
  }));
  for (const m of mounts) {
    if (!spec.volumes?.some((v) => v.name === m.volume)) throw new Error(`${c.name}: mount of unknown volume ${m.volume}`);
  }
  return {
    name: c.name,
    argv: resolveArgv(c, image, env),
    env,
    uid,
    gid,
    groups,
    readOnlyRootFilesystem: own.readOnlyRootFilesystem === true,
    noNewPrivs: own.allowPrivilegeEscalation === false,
    capabilities,
    mounts,
    workdir: (c as { workingDir?: string }).workingDir ?? image.workdir,
  };
}
