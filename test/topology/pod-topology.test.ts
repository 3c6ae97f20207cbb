/**
 * The chart's pod topology, end to end, with real processes: helm renders the release; the
 * DaemonSet's pod and then the inference Deployment's pod run on one "node" (a network namespace)
 * exactly as rendered — argv from the image's ENTRYPOINT and the spec, env with the downward API
 * resolved and `$(VAR)` expanded, volume mounts (read-only, subPath), users, groups, capabilities
 * and read-only roots — each container in its own mount, PID and UTS namespace (see sandbox.ts).
 *
 * The daemon pulls the declared models from the fake hub; the inference pod's init container
 * (`swift-fetch init ... --store /models`) must exit 0; its main container keeps the rendered
 * command, whose `swift` is a stand-in (fixtures/swift.py) that checks the directory it was handed
 * and reads the hub caches offline with the real clients. Mutations of the rendered spec that
 * break the pod's view of the store must make the pod fail.
 *
 * Needs Linux, root, helm, util-linux (unshare, nsenter, setpriv), iproute2, the Python venv and
 * a built dist/. Outside CI a missing piece skips the suite with the reason; under CI=true it fails.
 */
import { existsSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { configMapFiles, find, findTool, helmPath, isCI, podSpec, render, type Container, type K8sObject, type PodSpec, type Rendered } from '../chart/support.js';
import { DEMO_REPO, demoFiles, startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { PYTHON_MISSING, pythonBin, repoRoot, tmpDir, type RunResult } from '../support/index.js';
import { msSwiftStandIn, swiftFetchImage, type Image } from './images.js';
import { planContainer } from './kubelet.js';
import { NodeNetwork, PodSandbox, type RunningContainer } from './sandbox.js';

function missing(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux namespaces';
  if (process.getuid?.() !== 0) return 'needs root (mount, PID and network namespaces)';
  if (!helmPath) return 'helm not found (HELM_BIN, ~/.cache/swift-fetch/bin, PATH): run .ci/install-helm.sh';
  for (const t of ['unshare', 'nsenter', 'setpriv', 'chroot', 'mount', 'ip']) {
    if (!findTool(t, `${t.toUpperCase()}_BIN`)) return `${t} not found on PATH (util-linux, iproute2)`;
  }
  if (!existsSync(pythonBin())) return PYTHON_MISSING;
  if (!existsSync(join(repoRoot, 'dist/cli/main.js'))) return 'dist/ is not built: run npm run build';
  return undefined;
}
const why = missing();
if (why && !isCI) console.warn(`skipping the pod-topology test: ${why}`);
const runs = why === undefined || isCI;

const ONDEMAND_REPO = 'demo/on-demand';
const UNREACHED_REPO = 'demo/unreached';

let hub: FakeHub;
let work: string;
const repos = new Map<string, AddedRepo>();
let pods = 0;

/** The release: defaults plus inference on, the fake hub as both hubs' endpoint, `extra` on top. */
function release(model: string, extra: string[] = []): Promise<Rendered> {
  return render([], [
    'inference.enabled=true',
    'inference.image.tag=test',
    `inference.model=${model}`,
    `models={hf://${DEMO_REPO},ms://${DEMO_REPO}}`,
    `hub.huggingface.endpoint=${hub.hfEndpoint}`,
    `hub.modelscope.endpoint=${hub.msEndpoint}`,
    ...extra,
  ]);
}

/** What the stand-in `swift` must find for `ref`, from the fake hub's own listing. */
function expectation(ref: string): { hub: string; repo: string; revision: string; files: Record<string, string> } {
  const [, h, repo] = /^(hf|ms):\/\/([^@]+)$/.exec(ref)!;
  return {
    hub: h!,
    repo: repo!,
    revision: h === 'hf' ? 'main' : 'master',
    files: Object.fromEntries(repos.get(repo!)!.files.map((f) => [f.path, f.sha256])),
  };
}

interface PodRun {
  init: Array<{ name: string } & RunResult>;
  main?: RunResult;
}

function describeRun(p: PodRun): string {
  const parts = p.init.map((i) => `init ${i.name}: exit ${i.code}\n${i.stdout}${i.stderr}`);
  if (p.main) parts.push(`main: exit ${p.main.code}\n${p.main.stdout}${p.main.stderr}`);
  return parts.join('\n---\n');
}

function container(spec: PodSpec, name: string): Container {
  const c = [...(spec.initContainers ?? []), ...spec.containers].find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}

/** A node: its network namespace, its root folder (hostPath volumes) and the daemon pod on it. */
class TestNode {
  readonly root: string;
  daemonPort = 0;
  private daemonPod?: PodSandbox;
  private daemon?: RunningContainer;
  /** The release's Secrets as first installed: `lookup` keeps them (the API token) across later renders. */
  private secrets: K8sObject[] = [];
  private readonly swiftFetch = swiftFetchImage();

  constructor(readonly name: string, readonly net: NodeNetwork) {
    this.root = join(work, name);
  }

  private imageFor(c: Container, standIn: Image | undefined): Image {
    if (c.image.startsWith('swift-fetch/swift-fetch:')) return this.swiftFetch;
    if (!standIn) throw new Error(`container ${c.name} runs ${c.image}, which this pod has no stand-in for`);
    return standIn;
  }

  private async pod(prefix: string, spec: PodSpec, objects: K8sObject[]): Promise<PodSandbox> {
    const name = `${prefix}-${pods++}`;
    await mkdir(this.root, { recursive: true });
    return PodSandbox.start({ name, spec, objects, net: this.net, nodeRoot: this.root, dir: join(work, 'pods', name) });
  }

  private plan(pod: PodSandbox, spec: PodSpec, c: Container, objects: K8sObject[], standIn?: Image) {
    const facts = { hostIP: this.net.hostIP, podIP: this.net.hostIP, nodeName: this.name, podName: pod.name, namespace: 'models' };
    return planContainer(spec, c, this.imageFor(c, standIn).config, objects, facts);
  }

  /** The DaemonSet's pod: its init containers to completion, then the daemon, left running. */
  async startDaemon(r: Rendered): Promise<void> {
    const spec = podSpec(find(r, 'DaemonSet'));
    this.secrets = r.objects.filter((o) => o.kind === 'Secret');
    this.daemonPod = await this.pod('sf-swift-fetch-daemon', spec, r.objects);
    for (const c of spec.initContainers ?? []) {
      const res = await this.daemonPod.run(this.plan(this.daemonPod, spec, c, r.objects), this.swiftFetch);
      if (res.code !== 0) throw new Error(`daemon init container ${c.name} exited ${res.code}: ${res.stderr}`);
    }
    const main = spec.containers[0]!;
    const port = main.ports!.find((p) => p.name === 'http')!;
    // Pods share the node's network here, so a hostPort can only be its own containerPort.
    if (port.hostPort !== undefined && port.hostPort !== port.containerPort) {
      throw new Error(`hostPort ${port.hostPort} != containerPort ${port.containerPort}: the topology harness does not NAT`);
    }
    this.daemonPort = port.hostPort ?? port.containerPort;
    this.daemon = await this.daemonPod.start(this.plan(this.daemonPod, spec, main, r.objects), this.swiftFetch);
  }

  daemonPid(): number {
    return this.daemon!.pid();
  }

  async models(): Promise<Array<{ ref: string; state: string; error: string | null }>> {
    const res = await fetch(`http://${this.net.hostIP}:${this.daemonPort}/v1/models`);
    return (await res.json()) as Array<{ ref: string; state: string; error: string | null }>;
  }

  async waitForReady(refs: string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (this.daemon?.hasExited()) throw new Error(`the daemon exited: ${this.daemon.output().stderr}`);
      const models = await this.models().catch((e: Error) => e);
      if (models instanceof Error) {
        last = models.message;
      } else {
        last = JSON.stringify(models);
        const failed = models.find((m) => m.state === 'failed');
        if (failed) throw new Error(`the daemon failed to pull ${failed.ref}: ${failed.error}`);
        if (refs.every((ref) => models.some((m) => m.ref.startsWith(ref) && m.state === 'ready'))) return;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`models not ready after ${timeoutMs} ms (${last}); daemon stderr:\n${this.daemon?.output().stderr}`);
  }

  /** Init containers in order, stopping at the first failure (the pod stays in Init:Error), then the main container. */
  async runPod(prefix: string, spec: PodSpec, objects: K8sObject[], standIn?: Image): Promise<PodRun> {
    const pod = await this.pod(prefix, spec, objects);
    const out: PodRun = { init: [] };
    try {
      for (const c of spec.initContainers ?? []) {
        const r = await pod.run(this.plan(pod, spec, c, objects, standIn), this.imageFor(c, standIn));
        out.init.push({ name: c.name, ...r });
        if (r.code !== 0) return out;
      }
      const c = spec.containers[0]!;
      out.main = await pod.run(this.plan(pod, spec, c, objects, standIn), this.imageFor(c, standIn));
      return out;
    } finally {
      await pod.close();
    }
  }

  /** The inference Deployment's pod for `model`, its spec changed by `mutate` first. */
  async inferencePod(model: string, mutate: (spec: PodSpec) => void = () => {}, extra: string[] = [], driverVersions?: string[]): Promise<PodRun> {
    const r = await release(model, extra);
    const spec = structuredClone(podSpec(find(r, 'Deployment', '-inference')));
    mutate(spec);
    // A fresh render draws fresh tokens; the cluster still holds the first install's Secrets.
    const objects = [...r.objects.filter((o) => o.kind !== 'Secret'), ...this.secrets];
    return this.runPod('sf-swift-fetch-inference', spec, objects, msSwiftStandIn(expectation(model), driverVersions));
  }

  async close(): Promise<void> {
    await this.daemon?.stop().catch(() => undefined);
    await this.daemonPod?.close().catch(() => undefined);
    this.net.close();
  }
}

const nodes: TestNode[] = [];

async function newNode(name: string): Promise<TestNode> {
  const node = new TestNode(name, NodeNetwork.create());
  nodes.push(node);
  return node;
}

describe.skipIf(!runs)('pod topology', () => {
  beforeAll(async () => {
    if (why) throw new Error(`the pod-topology test cannot run: ${why}`);
    work = realpathSync(await tmpDir('sf-topology-'));
    // The hub listens on the first node's link; other nodes get a route to it.
    const first = await newNode('node-1');
    hub = await startFakeHub({ host: first.net.gatewayIP, cdnHost: first.net.gatewayIP });
    repos.set(DEMO_REPO, await hub.addRepo({ id: DEMO_REPO, files: demoFiles() }));
    for (const [id, seed] of [[ONDEMAND_REPO, 7], [UNREACHED_REPO, 9]] as const) {
      repos.set(id, await hub.addRepo({ id, files: { 'config.json': `{"model_type":"${id}"}`, 'model.safetensors': Buffer.alloc(1 << 20, seed) } }));
    }
  });

  afterAll(async () => {
    for (const n of nodes) await n.close();
    await hub?.close().catch(() => undefined);
  }, 60_000);

  describe('mode init', () => {
    let node: TestNode;
    let rendered: Rendered;
    beforeAll(async () => {
      node = nodes[0]!;
      rendered = await release(`hf://${DEMO_REPO}`);
      await node.startDaemon(rendered);
      await node.waitForReady([`hf://${DEMO_REPO}`, `ms://${DEMO_REPO}`], 90_000);
    }, 150_000);

    it('runs the daemon as its rendered user, on node directories the init container handed to it', async () => {
      const models = await node.models();
      expect(models.filter((m) => m.state === 'ready').map((m) => m.ref).sort()).toEqual([`hf://${DEMO_REPO}@main`, `ms://${DEMO_REPO}@master`]);
      // Created root-owned by "the kubelet" (DirectoryOrCreate); volume-permissions chowned them.
      const spec = podSpec(find(rendered, 'DaemonSet'));
      const sc = spec.containers[0]!.securityContext!;
      for (const d of ['store', 'state', 'imports']) {
        expect(statSync(join(node.root, 'var/lib/swift-fetch', d)).uid, d).toBe(sc.runAsUser);
      }
    });

    it('applies the rendered security context and mounts to the daemon process (seen from the host)', async () => {
      const spec = podSpec(find(rendered, 'DaemonSet'));
      const c = spec.containers[0]!;
      const sc = c.securityContext!;
      const pid = node.daemonPid();
      const status = Object.fromEntries(
        readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]),
      );
      expect(status.Uid!.split(/\s+/)).toEqual(Array(4).fill(String(sc.runAsUser)));
      expect(status.Gid!.split(/\s+/)).toEqual(Array(4).fill(String(sc.runAsGroup)));
      expect(status.Groups!.split(/\s+/)).toContain(String(spec.securityContext!.fsGroup));
      expect(status.CapEff).toBe('0000000000000000');
      expect(status.CapBnd).toBe('0000000000000000');
      expect(status.NoNewPrivs).toBe(String(sc.allowPrivilegeEscalation === false ? 1 : 0));
      // PID 1 of its own PID namespace, in the node's network namespace, with its own hostname.
      expect(status.NSpid!.split(/\s+/).at(-1)).toBe('1');
      expect(statSync(`/proc/${pid}/ns/net`).ino).toBe(statSync(`/run/netns/${node.net.ns}`).ino);
      expect(readlinkSync(`/proc/${pid}/ns/uts`)).not.toBe(readlinkSync('/proc/self/ns/uts'));
      // Mount point -> read-only?, from the container's own mount table.
      const mounts = new Map(
        readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').filter(Boolean).map((l) => {
          const f = l.split(' ');
          return [f[4]!, f[5]!.split(',').includes('ro')] as const;
        }),
      );
      expect(mounts.get('/'), 'readOnlyRootFilesystem').toBe(sc.readOnlyRootFilesystem === true);
      for (const m of c.volumeMounts!) {
        const ro = m.readOnly === true || ['config', 'models', 'peer-token'].includes(m.name);
        expect(mounts.get(m.mountPath), m.mountPath).toBe(ro);
      }
    });

    it.each(['hf', 'ms'])('%s: init exits 0, and the main container finds every file, read-only, and the hub cache offline', async (h) => {
      const model = `${h}://${DEMO_REPO}`;
      const p = await node.inferencePod(model);
      expect(p.init.map((i) => [i.name, i.code]), describeRun(p)).toEqual([['wait-for-model', 0]]);
      expect(p.main?.code, describeRun(p)).toBe(0);
      const report = JSON.parse(p.main!.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
      const files = Object.keys(expectation(model).files).length;
      expect(report).toMatchObject({ mode: 'init', files, viewFiles: files, readOnly: true });
      expect(String(report.model)).toMatch(/^\/models\//);
      expect(String(report.view)).toMatch(h === 'hf' ? /^\/models\/huggingface\// : /^\/models\/modelscope\//);
    }, 120_000);

    it('init asks the node daemon at $(HOST_IP) for a model nobody declared, and the pod gets it', async () => {
      const p = await node.inferencePod(`hf://${ONDEMAND_REPO}`);
      expect(p.init[0]?.code, describeRun(p)).toBe(0);
      expect(p.init[0]?.stderr).toContain(`asked the daemon at http://${node.net.hostIP}:${node.daemonPort}`);
      expect(p.main?.code, describeRun(p)).toBe(0);
    }, 120_000);

    it.each([
      ['a new enough', ['550.54.15'], 0],
      ['an old', ['550.54.15', '470.82.01'], 1],
    ] as const)('the driver-check init container, on a node with %s NVIDIA driver, exits %i', async (_what, versions, code) => {
      const p = await node.inferencePod(`hf://${DEMO_REPO}`, () => {}, ['inference.driverCheck.minVersion=535.104.05'], [...versions]);
      expect(p.init[0]?.name).toBe('driver-check');
      expect(p.init[0]?.code, describeRun(p)).toBe(code);
      if (code === 0) {
        expect(p.init.map((i) => i.code)).toEqual([0, 0]);
        expect(p.main?.code, describeRun(p)).toBe(0);
      } else {
        expect(p.init[0]?.stderr).toMatch(/NVIDIA driver 470\.82\.01 is older than the required 535\.104\.05/);
        expect(p.main).toBeUndefined();
      }
    }, 120_000);

    describe("a chart that breaks the pod's view of the store fails the pod", () => {
      it('init handed another --store than the volume it mounts', async () => {
        const p = await node.inferencePod(`hf://${DEMO_REPO}`, (spec) => {
          const args = container(spec, 'wait-for-model').args!;
          args[args.indexOf('--store') + 1] = '/var/lib/swift-fetch/store';
        });
        expect(p.init[0]?.code, describeRun(p)).toBe(6);
        expect(p.init[0]?.stderr).toMatch(/does not have it/);
        expect(p.main).toBeUndefined();
      }, 120_000);

      it('the main container mounting the store at another path than init', async () => {
        const p = await node.inferencePod(`hf://${DEMO_REPO}`, (spec) => {
          container(spec, 'swift').volumeMounts!.find((m) => m.name === 'store')!.mountPath = '/mnt/models';
        });
        expect(p.init[0]?.code, describeRun(p)).toBe(0);
        expect(p.main?.code, describeRun(p)).not.toBe(0);
        expect(p.main?.stderr).toMatch(/no such directory in this container/);
      }, 120_000);

      it('the store mounted writable in the main container', async () => {
        const p = await node.inferencePod(`hf://${DEMO_REPO}`, (spec) => {
          delete container(spec, 'swift').volumeMounts!.find((m) => m.name === 'store')!.readOnly;
        });
        expect(p.main?.code, describeRun(p)).not.toBe(0);
        expect(p.main?.stderr).toMatch(/the store is writable/);
      }, 120_000);

      it('the link file not shared with the main container', async () => {
        const p = await node.inferencePod(`ms://${DEMO_REPO}`, (spec) => {
          const c = container(spec, 'swift');
          c.volumeMounts = c.volumeMounts!.filter((m) => m.name !== 'models-path');
        });
        expect(p.init[0]?.code, describeRun(p)).toBe(0);
        expect(p.main?.code, describeRun(p)).not.toBe(0);
        expect(p.main?.stderr).toMatch(/--model is empty/);
      }, 120_000);

      it('HF_HOME pointing away from the store', async () => {
        const p = await node.inferencePod(`hf://${DEMO_REPO}`, (spec) => {
          container(spec, 'swift').env!.find((e) => e.name === 'HF_HOME')!.value = '/models/elsewhere';
        });
        expect(p.init[0]?.code, describeRun(p)).toBe(0);
        expect(p.main?.code, describeRun(p)).not.toBe(0);
        expect(p.main?.stderr).toMatch(/LocalEntryNotFoundError|offline/i);
      }, 120_000);

      it('init pointed at a port the DaemonSet does not open', async () => {
        const p = await node.inferencePod(`hf://${UNREACHED_REPO}`, (spec) => {
          const args = container(spec, 'wait-for-model').args!;
          const i = args.indexOf('--daemon') + 1;
          args[i] = args[i]!.replace(`:${node.daemonPort}`, ':7999');
        });
        expect(p.init[0]?.code, describeRun(p)).not.toBe(0);
        // The store is read-only in the pod (selfPullFallback off): init says so instead of pulling.
        expect(p.init[0]?.stderr).toMatch(/is unreachable \(ECONNREFUSED\) and self-pull is disabled/);
        expect(p.main).toBeUndefined();
      }, 120_000);
    });
  });

  describe('mode mirror', () => {
    let node: TestNode;
    beforeAll(async () => {
      node = await newNode('node-2');
      node.net.reach(nodes[0]!.net.gatewayIP);
      const r = await release(`hf://${DEMO_REPO}`, ['inference.mode=mirror']);
      expect(YAML.parse(configMapFiles(r).config).mirror).toBe(true);
      await node.startDaemon(r);
      await node.waitForReady([], 30_000);
    }, 120_000);

    it.each(['hf', 'ms'])('%s: the pod has no store and downloads through its node daemon with the real client', async (h) => {
      const model = `${h}://${DEMO_REPO}`;
      const p = await node.inferencePod(model, (spec) => {
        // As rendered: the endpoints are the node daemon's mirror, nothing points at the hub.
        const env = container(spec, 'swift').env!;
        expect(env.find((e) => e.name === 'HF_ENDPOINT')!.value).toMatch(/^http:\/\/\$\(HOST_IP\):\d+\/hf$/);
        expect(env.find((e) => e.name === 'MODELSCOPE_ENDPOINT')!.value).toMatch(/^http:\/\/\$\(HOST_IP\):\d+\/ms$/);
      }, ['inference.mode=mirror']);
      expect(p.main?.code, describeRun(p)).toBe(0);
      const report = JSON.parse(p.main!.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
      const files = Object.keys(expectation(model).files).length;
      expect(report).toMatchObject({ mode: 'mirror', viewFiles: files });
    }, 120_000);
  });
});
