/**
 * The rendered chart played as containers: `helm template` with the inference Deployment on, its
 * DaemonSet's pod and the inference Deployment's pod converted to Pods (test/image/kube.ts says
 * what changes and why) and run with `podman kube play` on one podman "node", with the ConfigMaps
 * and Secret they use. The model the inference pod asks for must reach its main container, whose
 * command is replaced by a check script (the stand-in for `swift deploy`).
 *
 * What podman kube play 4.3 does not do is checked from the rendered YAML in the first test:
 * probes, runAsNonRoot, seccompProfile, fsGroup, hostPort, emptyDir medium/sizeLimit, extended
 * resources (GPUs).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pattern, sha } from '../bundle/helpers.js';
import { type Container, type EnvVar, probePort, type PodSpec } from '../chart/support.js';
import { until } from '../daemon/helpers.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { toPlayablePod, type PlayablePod } from './kube.js';
import { imageValues, model, only, play, startChartNode, type ChartNode } from './node.js';
import { containerState, imageReady, imageTestsRun, logs, podman, podmanOk, requireImage, SLOW_TEST_MS, UID } from './support.js';

const MiB = 1024 * 1024;
const SERVED = {
  'config.json': '{"model_type":"served"}',
  'model.safetensors': pattern(10 * MiB + 7, 31),
  'tokenizer/tokenizer.json': '{"tok":2}',
};
const DECLARED = { 'config.json': '{"model_type":"declared"}', 'model.safetensors': pattern(2 * MiB, 32) };

/**
 * The inference container's stand-in: everything the pod was handed must be there, verified, under
 * /models, read-only, and readable offline through HF_HOME. Prints one CHECK line, then stays up
 * like a server (a failure exits 1). Trimmed: podman 4.3 re-encodes the YAML and cannot read back
 * a string that starts with a newline.
 */
const CHECK = String.raw`
const fs = require('fs'), path = require('path'), crypto = require('crypto');
const fail = (m) => { console.log('CHECK FAILED ' + m); process.exit(1); };
const want = JSON.parse(process.env.CHECK_FILES);
const dir = fs.readFileSync('/models-path/path', 'utf8').trim();
if (!dir.startsWith('/models/')) fail('model directory ' + dir + ' is not under the pod\'s /models');
const got = {};
const walk = (d, rel) => { for (const e of fs.readdirSync(d)) { const p = path.join(d, e), r = rel ? rel + '/' + e : e;
  if (fs.statSync(p).isDirectory()) walk(p, r); else got[r] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex'); } };
walk(dir, '');
if (JSON.stringify(Object.keys(got).sort()) !== JSON.stringify(Object.keys(want).sort())) fail('files ' + Object.keys(got));
for (const [p, h] of Object.entries(want)) if (got[p] !== h) fail(p + ' hashes ' + got[p]);
const repo = path.join(process.env.HF_HOME, 'hub', 'models--' + process.env.CHECK_REPO.replace('/', '--'));
const commit = fs.readFileSync(path.join(repo, 'refs', 'main'), 'utf8').trim();
if (commit !== process.env.CHECK_COMMIT) fail('HF cache refs/main is ' + commit);
for (const [p, h] of Object.entries(want)) {
  const b = fs.readFileSync(path.join(repo, 'snapshots', commit, p));
  if (crypto.createHash('sha256').update(b).digest('hex') !== h) fail('HF snapshot ' + p);
}
try { fs.writeFileSync(path.join(dir, 'written-by-inference'), 'x'); fail('the store is writable'); }
catch (e) { if (e.code !== 'EROFS') fail('writing the store: ' + e.code); }
console.log('CHECK OK ' + dir + ' uid ' + process.getuid());
setInterval(() => {}, 1 << 30);
`.trim();

let hub: FakeHub;
let node: ChartNode;
let served: AddedRepo;
let inference: PlayablePod;

const env = (c: Container, name: string): EnvVar | undefined => c.env?.find((e) => e.name === name);

describe.skipIf(!imageTestsRun('chart'))('the rendered chart under podman kube play', () => {
  beforeAll(async () => {
    if (!imageReady('chart')) return;
    hub = await startFakeHub();
    served = await hub.addRepo({ id: 'demo/served', files: SERVED });
    await hub.addRepo({ id: 'demo/declared', files: DECLARED });
    const { repository, tag } = imageValues();
    // The daemon keeps demo/declared; the inference pod asks for demo/served, which is not declared:
    // its init container has the daemon pull it.
    node = await startChartNode(hub, ['hf://demo/declared'], [
      'inference.enabled=true',
      'inference.model=hf://demo/served',
      `inference.image.repository=${repository}`,
      `inference.image.tag=${tag}`,
      'inference.initTimeout=3m',
    ]);
    const deployment = only(node.objects, 'Deployment');
    inference = toPlayablePod(deployment, node.objects, node.node, `${node.release}-inference`, (c) => ({
      ...c,
      command: ['node', '-e', CHECK],
      args: [],
      env: [
        ...(c.env ?? []),
        { name: 'CHECK_FILES', value: JSON.stringify(Object.fromEntries(Object.entries(SERVED).map(([p, b]) => [p, sha(b)]))) },
        { name: 'CHECK_REPO', value: 'demo/served' },
        { name: 'CHECK_COMMIT', value: served.commit },
      ],
    }));
  }, 240_000);
  beforeEach(() => requireImage('chart'));
  afterAll(async () => hub?.close());

  it('renders what podman does not enforce as the chart means it (checked from the YAML)', () => {
    const daemon = node.daemon.rendered;
    const d = daemon.containers.find((c) => c.name === 'daemon')!;
    const inf: PodSpec = inference.rendered;
    const init = inf.initContainers!.find((c) => c.args?.[0] === 'init')!;
    // Probes: podman would turn liveness into a curl healthcheck and ignores the others; the
    // daemon test requests each path on this port.
    for (const p of [d.startupProbe, d.livenessProbe, d.readinessProbe]) expect(probePort(d, p!.httpGet!.port)).toBe(node.port);
    // runAsNonRoot and seccomp are not checked by podman: the rendered pods ask for them.
    for (const [spec, c] of [[daemon, d], [inf, init]] as const) {
      const sc = { ...spec.securityContext, ...c.securityContext } as { runAsNonRoot?: boolean; runAsUser?: number; seccompProfile?: { type: string } };
      expect(sc.runAsNonRoot).toBe(true);
      expect(sc.runAsUser).toBe(UID);
      expect(sc.seccompProfile?.type).toBe('RuntimeDefault');
    }
    expect((daemon.securityContext as { fsGroup?: number }).fsGroup).toBe(UID);
    // The node port the init container dials is the daemon's hostPort, at the node's address.
    const hostPort = d.ports!.find((p) => p.name === 'http')!.hostPort;
    expect(hostPort).toBe(node.port);
    expect(init.args).toContain(`http://$(HOST_IP):${hostPort}`);
    expect(env(init, 'HOST_IP')?.valueFrom?.fieldRef?.fieldPath).toBe('status.hostIP');
    // The inference pod's store is read-only everywhere unless the init container may pull itself.
    for (const c of [...inf.initContainers!, ...inf.containers]) {
      const m = c.volumeMounts?.find((v) => v.name === 'store');
      if (m) expect(m.readOnly, c.name).toBe(true);
    }
    // In-memory /dev/shm and the GPU request: podman gives a plain volume and ignores the resource.
    const shm = inf.volumes!.find((v) => v.name === 'shm') as { emptyDir?: { medium?: string; sizeLimit?: string } };
    expect(shm.emptyDir?.medium).toBe('Memory');
    const main = inf.containers.find((c) => c.volumeMounts?.some((m) => m.mountPath === '/dev/shm'))!;
    expect(Object.keys(main.resources?.limits ?? {}).filter((k) => k.includes('/'))).not.toEqual([]);
  }, SLOW_TEST_MS);

  it('runs the daemon pod with the security context podman does apply', async () => {
    const inspect = JSON.parse(await podmanOk(['container', 'inspect', node.daemonContainer]))[0] as {
      Config: { User: string };
      HostConfig: { ReadonlyRootfs: boolean; CapDrop: string[]; CapAdd: string[]; SecurityOpt: string[] | null };
    };
    expect(inspect.Config.User).toBe(`${UID}:${UID}`);
    expect(inspect.HostConfig.ReadonlyRootfs).toBe(true);
    expect(inspect.HostConfig.CapAdd ?? []).toEqual([]);
    expect(inspect.HostConfig.CapDrop.length).toBeGreaterThan(10);
    expect(inspect.HostConfig.SecurityOpt ?? []).toContain('no-new-privileges');
    // The volume-permissions init container ran (as root with CHOWN only) and handed the node
    // directories to the daemon's user.
    const chown = `${node.daemon.name}-volume-permissions`;
    expect((await containerState(chown)).exitCode).toBe(0);
    const owners = await podmanOk(['exec', node.daemonContainer, 'stat', '-c', '%u:%g', '/var/lib/swift-fetch/store', '/var/lib/swift-fetch/state', '/var/lib/swift-fetch/imports']);
    expect(owners.trim().split('\n')).toEqual([`${UID}:${UID}`, `${UID}:${UID}`, `${UID}:${UID}`]);
  }, SLOW_TEST_MS);

  it('holds the inference pod on its init container until the daemon has the model, then hands the model to the main container', async () => {
    await until(async () => ((await model(node, 'hf://demo/declared'))?.state === 'ready' ? true : undefined), 250, 120_000);
    hub.perConnectionRate = 1 * MiB;
    // play() returns once the init containers are done and the main containers started.
    const playing = play(inference, node.node.dir).then(() => undefined, (e: Error) => e);
    let played: Error | undefined | null = null;
    void playing.then((e) => (played = e));
    // Container names from the rendering, whatever the templates call them: podman's are <pod>-<name>.
    const mains = inference.rendered.containers.map((c) => `${inference.name}-${c.name}`);
    const initName = `${inference.name}-${inference.rendered.initContainers!.find((c) => c.args?.[0] === 'init')!.name}`;
    const status = async (name: string) => (await podman(['container', 'inspect', '--format', '{{.State.Status}}', name])).stdout.trim();
    const gated = await until(async () => {
      if (played) throw played;
      const v = await model(node, 'hf://demo/served');
      if (!v || v.state === 'ready') return undefined;
      const apps = await Promise.all(mains.map(status));
      return (await status(initName)) === 'running' && !apps.includes('running') ? apps : undefined;
    }, 100, 60_000);
    expect(gated).not.toContain('running');
    hub.perConnectionRate = undefined;
    const failed = await playing;
    if (failed) throw failed;

    const init = await containerState(initName);
    const initLogs = await logs(initName);
    expect(init.exitCode, initLogs).toBe(0);
    expect(initLogs).toMatch(/ready at \/models\//);
    expect(initLogs).not.toContain('/var/lib/swift-fetch/store');
    for (const main of mains) {
      const line = await until(async () => /^CHECK (OK|FAILED).*$/m.exec(await logs(main))?.[0], 250, 60_000);
      expect(line, main).toMatch(/^CHECK OK \/models\/\S+ uid \d+$/);
      expect((await containerState(main)).status).toBe('running');
    }
  }, SLOW_TEST_MS);

  it('keeps the daemon pod answering its probes with both pods on the node', async () => {
    const d = node.daemon.rendered.containers.find((c) => c.name === 'daemon')!;
    for (const p of [d.startupProbe, d.livenessProbe, d.readinessProbe]) {
      expect((await node.api(p!.httpGet!.path)).status, p!.httpGet!.path).toBe(200);
    }
  }, SLOW_TEST_MS);
});
