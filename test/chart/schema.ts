/**
 * Validation of rendered objects against the Kubernetes OpenAPI schemas as shipped by the
 * `kubernetes-models` package (generated from the upstream OpenAPI spec, compiled to ajv
 * validators) and, for the prometheus-operator ServiceMonitor and cert-manager's Certificate,
 * `@kubernetes-models/prometheus-operator` and `@kubernetes-models/cert-manager` (generated from their CRDs). A kind without a schema here is an error, so a new template cannot
 * slip past validation.
 *
 * Those compiled schemas do not reject unknown properties, so a misspelt field (which the API
 * server drops with only a warning) would pass. `strictErrors` closes that gap with the
 * `kubernetes-validate` package (PyPI), whose strict schemas forbid additional properties.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { findTool, mustHave, type K8sObject } from './support.js';

interface Model {
  validate(): void;
}
type ModelCtor = new (data: object) => Model;

const CORE = 'kubernetes-models';
const MODULES: Record<string, string> = {
  'v1/ConfigMap': `${CORE}/v1/ConfigMap`,
  'v1/Secret': `${CORE}/v1/Secret`,
  'v1/Service': `${CORE}/v1/Service`,
  'v1/ServiceAccount': `${CORE}/v1/ServiceAccount`,
  'v1/Pod': `${CORE}/v1/Pod`,
  'apps/v1/DaemonSet': `${CORE}/apps/v1/DaemonSet`,
  'apps/v1/Deployment': `${CORE}/apps/v1/Deployment`,
  'networking.k8s.io/v1/Ingress': `${CORE}/networking.k8s.io/v1/Ingress`,
  'autoscaling/v2/HorizontalPodAutoscaler': `${CORE}/autoscaling/v2/HorizontalPodAutoscaler`,
  'policy/v1/PodDisruptionBudget': `${CORE}/policy/v1/PodDisruptionBudget`,
  'apiextensions.k8s.io/v1/CustomResourceDefinition': `${CORE}/apiextensions.k8s.io/v1/CustomResourceDefinition`,
  'rbac.authorization.k8s.io/v1/ClusterRole': `${CORE}/rbac.authorization.k8s.io/v1/ClusterRole`,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': `${CORE}/rbac.authorization.k8s.io/v1/ClusterRoleBinding`,
  'rbac.authorization.k8s.io/v1/Role': `${CORE}/rbac.authorization.k8s.io/v1/Role`,
  'rbac.authorization.k8s.io/v1/RoleBinding': `${CORE}/rbac.authorization.k8s.io/v1/RoleBinding`,
  'networking.k8s.io/v1/NetworkPolicy': `${CORE}/networking.k8s.io/v1/NetworkPolicy`,
  'monitoring.coreos.com/v1/ServiceMonitor': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor',
  'cert-manager.io/v1/Certificate': '@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate',
};

const cache = new Map<string, ModelCtor>();

async function modelFor(apiVersion: string, kind: string): Promise<ModelCtor> {
  const key = `${apiVersion}/${kind}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const mod = MODULES[key];
  if (!mod) throw new Error(`no schema registered for ${key}: add it to test/chart/schema.ts`);
  const ns = (await import(mod)) as Record<string, ModelCtor>;
  const ctor = ns[kind];
  if (!ctor) throw new Error(`${mod} does not export ${kind}`);
  cache.set(key, ctor);
  return ctor;
}

/** Schema errors of one object, as "Kind/name: /path message" lines (empty when valid). */
export async function schemaErrors(o: K8sObject): Promise<string[]> {
  const Ctor = await modelFor(o.apiVersion, o.kind);
  try {
    new Ctor(o).validate();
    return [];
  } catch (e) {
    const errs = (e as { errors?: { instancePath: string; message?: string }[] }).errors;
    const where = `${o.kind}/${o.metadata?.name}`;
    if (!errs) return [`${where}: ${(e as Error).message}`];
    return errs.map((x) => `${where}: ${x.instancePath || '/'} ${x.message ?? ''}`.trim());
  }
}

export const kubernetesValidatePath = findTool('kubernetes-validate', 'KUBERNETES_VALIDATE_BIN');
/** Kinds kubernetes-validate has no schema for (CRDs); schemaErrors covers them. */
const NOT_BUILTIN = new Set(['monitoring.coreos.com/v1', 'cert-manager.io/v1']);

/**
 * Strict validation (no unknown fields) of the built-in objects against the schemas of one
 * Kubernetes version, e.g. "1.27.0". Returns kubernetes-validate's error lines (empty when valid).
 */
export async function strictErrors(objects: K8sObject[], kubeVersion: string): Promise<string[]> {
  const bin = mustHave('kubernetes-validate', kubernetesValidatePath, 'KUBERNETES_VALIDATE_BIN');
  const dir = await mkdtemp(join(tmpdir(), 'sf-chart-'));
  try {
    const file = join(dir, 'rendered.yaml');
    const builtin = objects.filter((o) => !NOT_BUILTIN.has(o.apiVersion));
    // kubernetes-validate reads YAML 1.1 (PyYAML), where an unquoted `off` or `yes` is a boolean.
    await writeFile(file, builtin.map((o) => YAML.stringify(o, { version: '1.1' })).join('---\n'));
    try {
      await promisify(execFile)(bin, ['--strict', '--quiet', '--no-warn', '-k', kubeVersion, file]);
      return [];
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string; message: string };
      const out = `${err.stdout ?? ''}${err.stderr ?? ''}`.trim() || err.message;
      return out.split('\n').map((l) => l.replace(file, 'rendered'));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
