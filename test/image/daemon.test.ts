/**
 * The daemon container of the image with the chart's mounts (config and models files from the
 * ConfigMap, the peer token from the Secret, store, state, imports, tmp), played from the rendered
 * DaemonSet on a podman "node" (test/image/node.ts), pulling from the fake hub over loopback. And
 * the init container from the same image, with the store read-only at /models, gating on it.
 */
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pattern, sha } from '../bundle/helpers.js';
import { probePort } from '../chart/support.js';
import { until } from '../daemon/helpers.js';
import { startFakeHub, type AddedRepo, type FakeHub } from '../fakehub/index.js';
import { readTree, tmpDir } from '../support/index.js';
import { model, startChartNode, type ChartNode } from './node.js';
import { containerState, IMAGE, imageReady, imageTestsRun, logs, podman, podmanOk, requireImage, SLOW_TEST_MS, track, UID, uniqueName } from './support.js';

const MiB = 1024 * 1024;
const TINY = { 'config.json': '{"model_type":"demo"}', 'model.safetensors': pattern(6 * MiB + 3, 21), 'tokenizer.json': '{"t":1}' };
const BIG = { 'config.json': '{"big":1}', 'model.safetensors': pattern(40 * MiB, 22) };
const GATE = { 'config.json': '{"gate":1}', 'model.safetensors': pattern(12 * MiB, 23) };
/** Per response body: with the 4 connections the chart is rendered with, 4 MiB/s for a file. */
const SLOW = 1 * MiB;

let hub: FakeHub;
let node: ChartNode;
const repos: Record<string, AddedRepo> = {};

async function expectFiles(dir: string, files: Record<string, Buffer | string>): Promise<void> {
  const tree = await readTree(dir);
  expect([...tree.keys()].sort()).toEqual(Object.keys(files).sort());
  for (const [p, c] of Object.entries(files)) expect(sha(tree.get(p)!), p).toBe(sha(c));
}

describe.skipIf(!imageTestsRun('chart'))('the daemon container with the chart\'s mounts', () => {
  beforeAll(async () => {
    if (!imageReady('chart')) return;
    hub = await startFakeHub();
    repos.tiny = await hub.addRepo({ id: 'demo/tiny', files: TINY });
    repos.big = await hub.addRepo({ id: 'demo/big', files: BIG });
    repos.gate = await hub.addRepo({ id: 'demo/gate', files: GATE });
    // 1 MiB chunks and 4 connections: a pull stopped part-way has little in flight to lose.
    node = await startChartNode(hub, ['hf://demo/tiny'], ['daemon.chunkSize=1MiB', 'daemon.connections=4']);
  }, 240_000);
  beforeEach(() => requireImage('chart'));
  afterAll(async () => hub?.close());

  it('runs as the chart\'s user on a read-only root, with the config, models file and peer token mounted', async () => {
    const c = node.daemon.rendered.containers.find((x) => x.name === 'daemon')!;
    const mounts = Object.fromEntries(c.volumeMounts!.map((m) => [m.name, m.mountPath]));
    const r = await podman(['exec', node.daemonContainer, 'sh', '-c', [
      'id -u', 'id -g',
      `test -s ${mounts.config} && echo config`,
      `test -s ${mounts.models}/models.yaml && echo models`,
      `test -s ${mounts['peer-token']}/token && echo token`,
      'touch /app/x 2>/dev/null || echo root-read-only',
      `touch ${mounts['peer-token']}/x 2>/dev/null || echo token-read-only`,
      ...['store', 'state', 'imports', 'tmp'].map((v) => `touch ${mounts[v]}/.w && rm ${mounts[v]}/.w && echo ${v}-writable`),
    ].join('; ')]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual([
      String(UID), String(UID), 'config', 'models', 'token', 'root-read-only', 'token-read-only',
      'store-writable', 'state-writable', 'imports-writable', 'tmp-writable',
    ]);
  }, SLOW_TEST_MS);

  it('answers the chart\'s probes on the rendered paths and port', async () => {
    const c = node.daemon.rendered.containers.find((x) => x.name === 'daemon')!;
    const probes = [c.startupProbe, c.livenessProbe, c.readinessProbe].map((p) => p?.httpGet);
    expect(probes.every((p) => p !== undefined)).toBe(true);
    for (const p of probes) {
      expect(probePort(c, p!.port)).toBe(node.port);
      const r = await until(async () => ((await node.api(p!.path)).status === 200 ? true : undefined), 250, 30_000);
      expect(r, p!.path).toBe(true);
    }
  }, SLOW_TEST_MS);

  it('pulls the declared model from the fake hub into the store volume', async () => {
    const m = await until(async () => {
      const v = await model(node, 'hf://demo/tiny');
      if (v?.state === 'failed') throw new Error(`pull failed: ${v.error}`);
      return v?.state === 'ready' ? v : undefined;
    }, 250, 120_000);
    expect(m.commit).toBe(repos.tiny!.commit);
    expect(m.path!.startsWith('/var/lib/swift-fetch/store/')).toBe(true);
    await expectFiles(await node.hostPath(m.path!), TINY);
    // The bytes came over loopback from the fake hub's CDN host.
    expect(hub.bytesSent({ host: 'cdn', path: 'model.safetensors' })).toBeGreaterThanOrEqual(TINY['model.safetensors'].length);
  }, SLOW_TEST_MS);

  it('stops on SIGTERM with exit 0 within the grace period while a pull is in flight, and resumes it after a restart', async () => {
    const grace = (node.daemon.rendered as { terminationGracePeriodSeconds?: number }).terminationGracePeriodSeconds ?? 30;
    hub.perConnectionRate = SLOW;
    hub.resetStats();
    expect((await node.api('/v1/pulls', { ref: 'hf://demo/big' })).status).toBe(202);
    const total = BIG['model.safetensors'].length;
    const before = await until(async () => {
      const v = await model(node, 'hf://demo/big');
      return v && v.state === 'downloading' && v.bytesDone >= 0.3 * total ? v : undefined;
    }, 100, 60_000);
    expect(before.bytesDone).toBeLessThan(total);

    // podman stop sends SIGTERM to PID 1 (tini), which hands it to the daemon; SIGKILL only after the grace period.
    const t0 = Date.now();
    await podmanOk(['stop', '-t', String(grace), node.daemonContainer], { timeoutMs: (grace + 30) * 1000 });
    const stoppedMs = Date.now() - t0;
    const state = await containerState(node.daemonContainer);
    expect(state.exitCode, await logs(node.daemonContainer)).toBe(0);
    expect(stoppedMs).toBeLessThan(grace * 1000);
    const fetchedBefore = hub.bytesSent({ host: 'cdn', path: 'model.safetensors' });
    expect(fetchedBefore).toBeLessThan(total);

    hub.perConnectionRate = undefined;
    hub.resetStats();
    await podmanOk(['start', node.daemonContainer]);
    await until(async () => ((await node.api('/healthz').catch(() => undefined))?.status === 200 ? true : undefined), 250, 60_000);
    expect((await node.api('/v1/pulls', { ref: 'hf://demo/big' })).status).toBe(202);
    const after = await until(async () => {
      const v = await model(node, 'hf://demo/big');
      if (v?.state === 'failed') throw new Error(`pull failed: ${v.error}`);
      return v?.state === 'ready' ? v : undefined;
    }, 250, 120_000);
    await expectFiles(await node.hostPath(after.path!), BIG);
    // Resumed, not restarted: what was checkpointed before the stop is not fetched again. The slack
    // is the chunks in flight at SIGTERM (4 connections x 1 MiB).
    const refetched = hub.bytesSent({ host: 'cdn', path: 'model.safetensors' });
    console.log(`SIGTERM at ${before.bytesDone} of ${total} bytes: stopped in ${stoppedMs} ms (grace ${grace} s); fetched ${refetched} bytes after the restart`);
    expect(refetched).toBeLessThanOrEqual(total - before.bytesDone + 4 * MiB);
  }, SLOW_TEST_MS);

  it('holds an init container (same image, store read-only at /models) until the daemon has the model, then prints paths under /models', async () => {
    hub.perConnectionRate = SLOW;
    const out = await tmpDir('sf-image-init-');
    await chmod(out, 0o777); // as an emptyDir: writable by the pod's user
    const name = track('container', uniqueName('init'));
    const storeVolume = node.daemon.volumes.store!;
    // The node API token, mounted as the chart mounts its Secret into init containers.
    const tokenFile = join(out, '..', `${name}-api-token`);
    await writeFile(tokenFile, node.apiToken ?? '', { mode: 0o444 });
    // As the chart's init container runs: read-only root, the store read-only at its own path,
    // a writable /tmp for its own state and the pod-shared directory for the link file.
    await podmanOk(['run', '-d', '--name', name, '--network', 'host', '--read-only', '--user', `${UID}:${UID}`,
      '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
      '-v', `${storeVolume}:/models:ro`, '--tmpfs', '/tmp', '-v', `${out}:/models-path`,
      '-v', `${tokenFile}:/etc/swift-fetch/api-token/token:ro`,
      '-e', 'SWIFT_FETCH_STATE_DIR=/tmp/state', '-e', 'HOME=/tmp',
      IMAGE, 'init', 'hf://demo/gate', '--store', '/models', '--daemon', `http://127.0.0.1:${node.port}`,
      '--daemon-token-file', '/etc/swift-fetch/api-token/token',
      '--timeout', '2m', '--link-file', '/models-path/path']);
    // Gating: while the daemon is still downloading, the init container has not finished.
    const seen = await until(async () => {
      const v = await model(node, 'hf://demo/gate');
      return v && v.state !== 'ready' && (await containerState(name)).status === 'running' ? v : undefined;
    }, 100, 60_000);
    expect(seen.state).not.toBe('ready');
    hub.perConnectionRate = undefined;

    const done = await until(async () => {
      const s = await containerState(name);
      return s.status === 'exited' ? s : undefined;
    }, 250, 120_000);
    const text = await logs(name);
    expect(done.exitCode, text).toBe(0);
    expect((await model(node, 'hf://demo/gate'))?.state).toBe('ready');
    // Everything init prints and writes is under its own --store, not the daemon's mount path.
    const linked = (await readFile(join(out, 'path'), 'utf8')).trim();
    expect(linked.startsWith('/models/')).toBe(true);
    expect(text).toContain(linked);
    expect(text).not.toContain('/var/lib/swift-fetch/store');
    await expectFiles(join(await node.storeDir(), relative('/models', linked)), GATE);
  }, SLOW_TEST_MS);
});
