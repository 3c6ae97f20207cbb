/**
 * The lock in the chart's ConfigMap: `helm template --set-file lock.file=swift-fetch.lock` with a
 * lock the real CLI wrote, read back by the daemon's own config loader and lock parser.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { posix } from 'node:path';
import { join } from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { parseLock } from '../../src/lock/index.js';
import { hubEnv } from '../bundle/helpers.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { chartDir, configMapFiles, find, helm, helmPath, NAMESPACE, podSpec, podTemplate, RELEASE, render, renderError, requireTool, type Rendered } from '../chart/support.js';
import { schemaErrors } from '../chart/schema.js';
import { runCli, tmpDir } from '../support/index.js';

const runs = requireTool('helm', helmPath, 'HELM_BIN');
const CONFIG_PATH = '/etc/swift-fetch/config.yaml';

describe.skipIf(!runs)('the lock in the chart (skipped without helm)', () => {
  let hub: FakeHub;
  let lockFile: string;
  let lockBytes: Buffer;
  let r: Rendered;
  beforeAll(async () => {
    hub = await startFakeHub();
    await hub.addRepo({ id: 'Qwen/Qwen2.5-0.5B-Instruct', files: { 'config.json': '{"model_type":"qwen2"}', 'model.safetensors': Buffer.alloc(100_000, 3) } });
    const dir = await tmpDir();
    lockFile = join(dir, 'swift-fetch.lock');
    const made = await runCli(['lock', 'hf://Qwen/Qwen2.5-0.5B-Instruct', '-o', lockFile, '--store', join(dir, 'store'), '--quiet'], { env: hubEnv(hub) });
    expect(made.code).toBe(0);
    lockBytes = await fsp.readFile(lockFile);
    const { stdout } = await helm(['template', RELEASE, chartDir, '--namespace', NAMESPACE, '--set-file', `lock.file=${lockFile}`, '--set', 'lock.locked=true']);
    r = { objects: YAML.parseAllDocuments(stdout).map((d) => d.toJS()).filter(Boolean), text: stdout };
  });
  afterAll(async () => hub?.close());

  it('puts the lock into the ConfigMap byte for byte, and the config points the daemon at it where the pod mounts it', () => {
    const { config, configMap } = configMapFiles(r);
    const data = (configMap as unknown as { data: Record<string, string> }).data;
    expect(Buffer.from(data['swift-fetch.lock']!)).toEqual(lockBytes);
    expect(parseLock(data['swift-fetch.lock']!, 'configmap').models.map((m) => m.ref)).toEqual(['hf://Qwen/Qwen2.5-0.5B-Instruct@main']);
    const cfg = parseConfig(config, CONFIG_PATH, { env: {} });
    expect(cfg.lockFile).toBe('/etc/swift-fetch/lock/swift-fetch.lock');
    expect(cfg.locked).toBe(true);
    const ds = find(r, 'DaemonSet');
    const spec = podSpec(ds);
    const mount = spec.containers[0]!.volumeMounts!.find((m) => m.mountPath === posix.dirname(cfg.lockFile!));
    expect(mount, 'a directory mount at dirname(lockFile)').toMatchObject({ readOnly: true });
    const vol = spec.volumes!.find((v) => v.name === mount!.name)!;
    expect(vol.configMap?.items).toEqual([{ key: 'swift-fetch.lock', path: posix.basename(cfg.lockFile!) }]);
    // A new lock rolls the DaemonSet: the pod template carries the lock's SHA-256.
    expect(podTemplate(ds).metadata.annotations?.['checksum/lock']).toBe(createHash('sha256').update(lockBytes).digest('hex'));
  });

  it('renders objects that validate against the Kubernetes schemas', async () => {
    expect((await Promise.all(r.objects.map(schemaErrors))).flat()).toEqual([]);
  });

  it('renders no lock, no mount and no lockFile by default; lock.locked without lock.file is an error', async () => {
    const plain = await render();
    const cfg = parseConfig(configMapFiles(plain).config, CONFIG_PATH, { env: {} });
    expect(cfg.lockFile).toBeUndefined();
    expect(plain.text).not.toContain('swift-fetch.lock');
    expect(await renderError([], ['lock.locked=true'])).toMatch(/lock\.locked needs lock\.file/);
  });
});
