/**
 * One Kubernetes node played with podman: the chart rendered against the fake hub, its pods
 * converted (test/image/kube.ts) and run with `podman kube play`, the daemon reachable on loopback.
 */
import { writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import YAML from 'yaml';
import { expect } from 'vitest';
import type { K8sObject } from '../chart/support.js';
import type { FakeHub } from '../fakehub/index.js';
import { tmpDir } from '../support/index.js';
import { renderChart, toPlayablePod, type Node, type PlayablePod } from './kube.js';
import { until } from '../daemon/helpers.js';
import { containerState, freePort, IMAGE, logs, podman, podmanOk, track, uniqueName } from './support.js';

export const NAMESPACE = 'models';

export interface ChartNode {
  release: string;
  port: number;
  objects: K8sObject[];
  node: Node;
  daemon: PlayablePod;
  /** podman's name of the daemon container. */
  daemonContainer: string;
  /** The node API token the chart generated (mutating routes need it), if the daemon has one. */
  apiToken: string | undefined;
  /** GET or POST a daemon route on loopback; JSON in and out. */
  api<T = unknown>(path: string, body?: unknown): Promise<{ status: number; json: T }>;
  /** A path the daemon printed (under its store mount), as a path on this host. */
  hostPath(daemonPath: string): Promise<string>;
  /** The store volume's directory on this host. */
  storeDir(): Promise<string>;
}

/** The image under test as the chart's `repository` and `tag` values. */
export function imageValues(): { repository: string; tag: string } {
  const colon = IMAGE.lastIndexOf(':');
  return colon > IMAGE.lastIndexOf('/') ? { repository: IMAGE.slice(0, colon), tag: IMAGE.slice(colon + 1) } : { repository: IMAGE, tag: 'latest' };
}

/** `--set` pairs pointing the image at the image under test and the hub at the fake hub. */
export function chartValues(hub: FakeHub, release: string, port: number, models: string[]): string[] {
  const { repository, tag } = imageValues();
  return [
    `fullnameOverride=${release}`,
    `image.repository=${repository}`,
    `image.tag=${tag}`,
    `models={${models.join(',')}}`,
    `hub.huggingface.endpoint=${hub.hfEndpoint}`,
    `hub.modelscope.endpoint=${hub.msEndpoint}`,
    // The node's network is the host's: the daemon listens on loopback only.
    'daemon.listenHost=127.0.0.1',
    `daemon.port=${port}`,
    `daemon.hostPort=${port}`,
  ];
}

/**
 * `podman kube play` of one converted pod, then its containers started as the kubelet would: each
 * init container in order, to completion (exit 0, or the pod does not start), then the main ones.
 * podman would do the same itself, but in this sandbox its wait for an init container's exit in a
 * pod always runs into a 20 s timeout (its own container clean-up does not finish while it
 * waits), so the pod is created with --start=false and started here. Every object the play
 * creates is removed after the file.
 */
export async function play(pod: PlayablePod, dir: string, opts: { initTimeoutMs?: number } = {}): Promise<void> {
  track('pod', pod.name);
  for (const v of [...Object.values(pod.volumes), ...pod.objectVolumes]) track('volume', v);
  for (const s of pod.secrets) track('secret', s);
  const file = join(dir, `${pod.name}.yaml`);
  await writeFile(file, pod.yaml);
  const r = await podman(['kube', 'play', '--start=false', file]);
  if (r.code !== 0) throw new Error(`podman kube play ${pod.name} exited ${r.code ?? r.signal}:\n${r.stderr}`);
  for (const c of pod.rendered.initContainers ?? []) {
    const name = `${pod.name}-${c.name}`;
    await podmanOk(['start', name]);
    const s = await until(async () => {
      const st = await containerState(name);
      return ['stopped', 'exited'].includes(st.status) ? st : undefined;
    }, 100, opts.initTimeoutMs ?? 180_000);
    if (s.exitCode !== 0) throw new Error(`init container ${name} exited ${s.exitCode}; the pod does not start:\n${await logs(name)}`);
  }
  for (const c of pod.rendered.containers) await podmanOk(['start', `${pod.name}-${c.name}`]);
}

/** The one rendered object of `kind`. */
export function only(objects: K8sObject[], kind: string): K8sObject {
  const hits = objects.filter((o) => o.kind === kind);
  if (hits.length !== 1) throw new Error(`expected one ${kind} in the rendered chart, found ${hits.length}`);
  return hits[0]!;
}

/**
 * The node API token the rendered daemon reads: its config's `api.tokenFile`, followed through the
 * daemon container's mounts to the Secret the chart generated.
 */
function apiToken(daemon: PlayablePod, objects: K8sObject[]): string | undefined {
  const c = daemon.rendered.containers.find((x) => x.name === 'daemon')!;
  const cm = objects.find((o) => o.kind === 'ConfigMap' && typeof (o.data as Record<string, string> | undefined)?.['config.yaml'] === 'string');
  const file = (YAML.parse((cm!.data as Record<string, string>)['config.yaml']!) as { api?: { tokenFile?: string } }).api?.tokenFile;
  if (!file) return undefined;
  const mount = c.volumeMounts!.find((m) => file.startsWith(`${m.mountPath}/`))!;
  const volume = (daemon.rendered.volumes ?? []).find((v) => v.name === mount.name) as { secret?: { secretName: string; items?: { key: string; path: string }[] } };
  const rel = file.slice(mount.mountPath.length + 1);
  const key = volume.secret!.items?.find((i) => i.path === rel)?.key ?? rel;
  const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === volume.secret!.secretName)!;
  return Buffer.from((secret.data as Record<string, string>)[key]!, 'base64').toString('utf8').trim();
}

/** The daemon's store mount path, from the rendered container. */
function storeMount(daemon: PlayablePod): string {
  const c = daemon.rendered.containers.find((x) => x.name === 'daemon')!;
  return c.volumeMounts!.find((m) => m.name === 'store')!.mountPath;
}

/**
 * Renders the chart (`models` declared, `extra` --set pairs), plays its DaemonSet's pod and waits
 * until the daemon answers /healthz.
 */
export async function startChartNode(hub: FakeHub, models: string[], extra: string[] = []): Promise<ChartNode> {
  const release = uniqueName('rel');
  const port = await freePort();
  const dir = await tmpDir('sf-image-');
  const objects = await renderChart(release, NAMESPACE, [...chartValues(hub, release, port, models), ...extra]);
  const node: Node = { name: 'node-a', volumePrefix: release, dir };
  const daemon = toPlayablePod(only(objects, 'DaemonSet'), objects, node, `${release}-daemon`);
  await play(daemon, dir);
  const base = `http://127.0.0.1:${port}`;
  const token = apiToken(daemon, objects);
  const api = async <T>(path: string, body?: unknown) => {
    // Mutating routes need the node API token, as any client in the cluster would send it.
    const auth: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
    const res = await fetch(base + path, body === undefined ? { headers: auth } : { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, json: (text && res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) as T };
  };
  const storeDir = async () => (await podmanOk(['volume', 'inspect', '--format', '{{.Mountpoint}}', daemon.volumes.store!])).trim();
  const chartNode: ChartNode = {
    release,
    port,
    objects,
    node,
    daemon,
    daemonContainer: `${daemon.name}-daemon`,
    apiToken: token,
    api,
    storeDir,
    hostPath: async (p) => join(await storeDir(), relative(storeMount(daemon), p)),
  };
  await waitHealthy(chartNode);
  return chartNode;
}

export async function waitHealthy(n: ChartNode, limitMs = 60_000): Promise<void> {
  const start = Date.now();
  for (;;) {
    const ok = await n.api('/healthz').then((r) => r.status === 200, () => false);
    if (ok) return;
    if (Date.now() - start > limitMs) {
      const logs = await podman(['logs', n.daemonContainer]);
      expect.fail(`daemon did not answer /healthz within ${limitMs} ms:\n${logs.stdout}${logs.stderr}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

export interface ModelView {
  ref: string;
  commit: string | null;
  state: string;
  bytesDone: number;
  bytesTotal: number;
  path: string | null;
  error: string | null;
}

export async function model(n: ChartNode, ref: string): Promise<ModelView | undefined> {
  const r = await n.api<ModelView[]>('/v1/models');
  return r.json.find((m) => m.ref === ref || m.ref.startsWith(`${ref}@`));
}
