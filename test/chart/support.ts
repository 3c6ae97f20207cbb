/**
 * Shared pieces of the chart tests: finding the external tools, rendering the chart with helm,
 * and walking the rendered objects.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import YAML from 'yaml';

const run = promisify(execFile);

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const chartDir = join(repoRoot, 'chart/swift-fetch');
export const valuesDir = join(repoRoot, 'test/chart/values');
export const isCI = process.env.CI === 'true';

function executable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Where .ci/install-helm.sh puts the tools it installs. */
export function toolsCacheDir(): string {
  if (process.env.SWIFT_FETCH_TOOLS_DIR) return process.env.SWIFT_FETCH_TOOLS_DIR;
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(cache, 'swift-fetch/bin');
}

/**
 * A tool from its env override (e.g. HELM_BIN), then the install script's cache, then PATH.
 * Undefined when none is executable.
 */
export function findTool(name: string, envVar: string): string | undefined {
  const fromEnv = process.env[envVar];
  if (fromEnv) return executable(fromEnv) ? fromEnv : undefined;
  const cached = join(toolsCacheDir(), name);
  if (executable(cached)) return cached;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && executable(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/**
 * Whether a suite that needs `tool` runs. Outside CI a missing tool skips the suite with the reason
 * printed; in CI the suite runs anyway so that every test in it fails on the missing tool.
 */
export function requireTool(label: string, path: string | undefined, envVar: string): boolean {
  if (path) return true;
  const why = `${label} not found (${envVar}, ${toolsCacheDir()}, PATH): run .ci/install-helm.sh`;
  if (isCI) return true;
  console.warn(`skipping ${label} tests: ${why}`);
  return false;
}

export function mustHave(label: string, path: string | undefined, envVar: string): string {
  if (!path) throw new Error(`${label} not found: set ${envVar} or run .ci/install-helm.sh (CI=true requires it)`);
  return path;
}

export const helmPath = findTool('helm', 'HELM_BIN');

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [k: string]: unknown;
}

export interface Rendered {
  objects: K8sObject[];
  /** The raw multi-document YAML helm printed. */
  text: string;
}

export const RELEASE = 'sf';
export const NAMESPACE = 'models';

export async function helm(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const bin = mustHave('helm', helmPath, 'HELM_BIN');
  // A private HOME-like config keeps the test independent of the user's repos and plugins.
  const env = { ...process.env, HELM_CONFIG_HOME: join(repoRoot, '.cache/helm/config'), HELM_CACHE_HOME: join(repoRoot, '.cache/helm/cache'), HELM_DATA_HOME: join(repoRoot, '.cache/helm/data') };
  return run(bin, args, { env, maxBuffer: 64 * 1024 * 1024 });
}

/** `helm template` with the given values files (relative to test/chart/values, or absolute) and --set pairs. */
export async function render(valuesFiles: string[] = [], set: string[] = []): Promise<Rendered> {
  const args = ['template', RELEASE, chartDir, '--namespace', NAMESPACE, '--include-crds'];
  for (const f of valuesFiles) args.push('--values', resolve(valuesDir, f));
  for (const s of set) args.push('--set', s);
  const { stdout } = await helm(args);
  const objects = YAML.parseAllDocuments(stdout)
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`helm printed invalid YAML: ${d.errors[0]!.message}`);
      return d.toJS() as K8sObject | null;
    })
    .filter((o): o is K8sObject => o !== null);
  return { objects, text: stdout };
}

/** `helm template` that is expected to fail; returns helm's error output. */
export async function renderError(valuesFiles: string[] = [], set: string[] = []): Promise<string> {
  try {
    await render(valuesFiles, set);
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    return err.stderr || err.message;
  }
  throw new Error('helm template succeeded but was expected to fail');
}

export function find(r: Rendered, kind: string, nameSuffix = ''): K8sObject {
  const hits = r.objects.filter((o) => o.kind === kind && o.metadata.name.endsWith(nameSuffix));
  if (hits.length !== 1) throw new Error(`expected one ${kind} named *${nameSuffix}, found ${hits.map((h) => h.metadata.name).join(', ') || 'none'}`);
  return hits[0]!;
}

export function findAll(r: Rendered, kind: string): K8sObject[] {
  return r.objects.filter((o) => o.kind === kind);
}

// Minimal shapes of what the assertions read; the schema tests check the full objects.
export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: { name: string; key: string; optional?: boolean };
    configMapKeyRef?: { name: string; key: string; optional?: boolean };
    fieldRef?: { fieldPath: string };
  };
}
export interface Probe {
  httpGet?: { path: string; port: number | string };
}
export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  ports?: { name?: string; containerPort: number; hostPort?: number }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
  securityContext?: Record<string, unknown> & { capabilities?: { drop?: string[]; add?: string[] } };
  volumeMounts?: { name: string; mountPath: string; subPath?: string; readOnly?: boolean }[];
  resources?: { limits?: Record<string, unknown>; requests?: Record<string, unknown> };
}
export interface Volume {
  name: string;
  configMap?: { name: string; items?: { key: string; path: string }[] };
  secret?: { secretName: string; items?: { key: string; path: string }[] };
  hostPath?: { path: string; type?: string };
  persistentVolumeClaim?: { claimName: string };
  emptyDir?: Record<string, unknown>;
}
export interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Volume[];
  securityContext?: Record<string, unknown>;
  tolerations?: { key?: string; operator?: string; effect?: string }[];
  nodeSelector?: Record<string, string>;
  hostNetwork?: boolean;
}

export function podSpec(o: K8sObject): PodSpec {
  if (o.kind === 'Pod') return o.spec as PodSpec;
  return (o.spec as { template: { spec: PodSpec } }).template.spec;
}

export function podTemplate(o: K8sObject): { metadata: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec } {
  return (o.spec as { template: { metadata: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec } }).template;
}

export function allContainers(spec: PodSpec): Container[] {
  return [...(spec.initContainers ?? []), ...spec.containers];
}

/** Every pod spec in the rendering (workloads and bare pods). */
export function podSpecs(r: Rendered): { owner: K8sObject; spec: PodSpec }[] {
  return r.objects
    .filter((o) => ['Pod', 'DaemonSet', 'Deployment', 'StatefulSet', 'Job'].includes(o.kind))
    .map((o) => ({ owner: o, spec: podSpec(o) }));
}

/** The daemon's config.yaml and models.yaml as helm rendered them into the ConfigMap. */
export function configMapFiles(r: Rendered): { config: string; models: string; configMap: K8sObject } {
  const cm = find(r, 'ConfigMap', `${RELEASE}-swift-fetch`);
  const data = cm.data as Record<string, string>;
  return { config: data['config.yaml']!, models: data['models.yaml']!, configMap: cm };
}

/** Resolve a probe port (name or number) against the container's ports. */
export function probePort(c: Container, port: number | string): number {
  if (typeof port === 'number') return port;
  const p = c.ports?.find((x) => x.name === port);
  if (!p) throw new Error(`container ${c.name} has no port named ${port}`);
  return p.containerPort;
}

/** The value sets the suites render; each file is under test/chart/values. */
export const VALUE_SETS: Record<string, string[]> = {
  defaults: [],
  'rwx-claim': ['rwx-claim.yaml'],
  models: ['models.yaml'],
  'peers-off': ['peers-off.yaml'],
  monitoring: ['monitoring.yaml'],
  inference: ['inference.yaml'],
  'inference-hostnetwork': ['inference.yaml', 'hostnetwork.yaml'],
  'inference-ascend': ['inference-ascend.yaml'],
  'inference-cpu': ['inference-cpu.yaml'],
  'inference-mig': ['inference-mig.yaml'],
  'inference-shared': ['inference-shared.yaml'],
  'inference-mirror': ['inference-mirror.yaml'],
  'object-storage': ['object-storage.yaml'],
};

/**
 * HTTPS with a cert-manager Certificate, inference and monitoring on. Not among VALUE_SETS: the
 * bare API server of test/kube has neither cert-manager's nor prometheus-operator's kinds.
 */
export const TLS_VALUES = ['inference.yaml', 'monitoring.yaml', 'tls.yaml'];

const renders = new Map<string, Promise<Rendered>>();

/** One of VALUE_SETS rendered (once per test file: the renderings are cached). */
export function renderSet(set: string): Promise<Rendered> {
  const files = VALUE_SETS[set];
  if (!files) throw new Error(`no value set ${set}`);
  let r = renders.get(set);
  if (!r) {
    r = render(files);
    renders.set(set, r);
  }
  return r;
}

/** Value sets that move the daemons off the default NVIDIA GPU nodes. */
export const OWN_NODE_SELECTION = new Set(['inference-ascend', 'inference-cpu']);

