/**
 * The built image itself (podman, .ci/build-image.sh): what it runs as, what it carries, and that
 * the CLI works in it under the restrictions the chart puts on it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { repoRoot } from '../support/index.js';
import { until } from '../daemon/helpers.js';
import { containerState, IMAGE, logs, imageTestsRun, labels, podman, podmanOk, requireImage, SLOW_TEST_MS, track, UID, uniqueName } from './support.js';

const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string; engines: { node: string } };

/** `podman run` with the chart's restrictions: read-only root, no capabilities, no privilege gain, no network. */
const locked = ['run', '--rm', '--read-only', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges', '--network', 'none'];

describe.skipIf(!imageTestsRun())(`image ${IMAGE}`, () => {
  beforeEach(() => requireImage());

  it('prints --help as uid 10001 on a read-only root filesystem', async () => {
    const r = await podman([...locked, '--user', `${UID}:${UID}`, IMAGE, '--help']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: swift-fetch /m);
    for (const cmd of ['pull', 'daemon', 'init', 'bundle']) expect(r.stdout).toMatch(new RegExp(`^\\s+${cmd}\\b`, 'm'));
  }, SLOW_TEST_MS);

  it('runs as the numeric non-root user by default and passes exit codes through', async () => {
    const config = JSON.parse(await podmanOk(['image', 'inspect', '--format', '{{json .Config}}', IMAGE])) as { User: string; Entrypoint: string[]; ExposedPorts: Record<string, unknown> };
    expect(config.User).toBe(`${UID}:${UID}`);
    expect(config.Entrypoint).toEqual(['swift-fetch']);
    expect(Object.keys(config.ExposedPorts)).toEqual(['7070/tcp']);
    // The documented usage exit code (2) comes back through the shim and tini unchanged.
    const bad = await podman([...locked, IMAGE, 'no-such-command']);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    const version = await podman([...locked, IMAGE, '--version']);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toBe(pkg.version);
  }, SLOW_TEST_MS);

  it('runs the daemon under tini as PID 1, which passes SIGTERM on and exits 0', async () => {
    const name = track('container', uniqueName('pid1'));
    // Laptop defaults (no config, no models): the store is the image's /var/lib/swift-fetch/store.
    await podmanOk(['run', '-d', '--name', name, '--network', 'none', '--read-only', '--tmpfs', '/tmp',
      '-v', `${name}-store:/var/lib/swift-fetch`, IMAGE, 'daemon', '--state-dir', '/tmp/state']);
    track('volume', `${name}-store`);
    // Signals are handled once the daemon has started (a SIGTERM during start-up ends it with 143).
    await until(async () => (await logs(name)).includes('"msg":"daemon started"'), 100, 30_000);
    const procs = await until(async () => {
      const r = await podman(['exec', name, 'sh', '-c', 'for p in /proc/[0-9]*; do echo "${p#/proc/} $(cut -d" " -f4 $p/stat) $(tr "\\0" " " < $p/cmdline)"; done']);
      return r.code === 0 && r.stdout.includes('swift-fetch.js daemon') ? r.stdout : undefined;
    }, 100, 30_000);
    const rows = procs.trim().split('\n').map((l) => { const [pid, ppid, ...cmd] = l.split(' '); return { pid, ppid, cmd: cmd.join(' ').trim() }; });
    expect(rows.find((p) => p.pid === '1')?.cmd).toBe('/usr/bin/tini -s -- node /app/bin/swift-fetch.js daemon --state-dir /tmp/state');
    expect(rows.find((p) => p.cmd.startsWith('node /app/bin/swift-fetch.js daemon'))?.ppid).toBe('1');
    const t0 = Date.now();
    await podmanOk(['stop', '-t', '20', name]);
    const state = await containerState(name);
    expect(state.exitCode).toBe(0);
    expect(Date.now() - t0).toBeLessThan(15_000);
  }, SLOW_TEST_MS);

  it('has Node in step with package.json engines, and no compiler or build tool in the runtime', async () => {
    const r = await podmanOk([...locked, '--entrypoint', 'sh', IMAGE, '-c',
      'node --version; for t in gcc g++ cc c++ clang make python3 node-gyp; do command -v "$t" || true; done']);
    const [version, ...tools] = r.trim().split('\n');
    const [major, minor] = /^v(\d+)\.(\d+)\./.exec(version!)!.slice(1).map(Number) as [number, number];
    const [minMajor, minMinor] = /(\d+)\.(\d+)/.exec(pkg.engines.node)!.slice(1).map(Number) as [number, number];
    expect(major, `image Node ${version} vs engines ${pkg.engines.node}`).toBe(minMajor);
    expect(minor).toBeGreaterThanOrEqual(minMinor);
    expect(tools).toEqual([]);
  }, SLOW_TEST_MS);

  it('loads the native SQLite module compiled for its Node', async () => {
    const r = await podman([...locked, '--workdir', '/app', '--entrypoint', 'node', IMAGE, '-e',
      'const D = require("better-sqlite3"); const db = new D(":memory:"); console.log(db.prepare("select sqlite_version() v").get().v)']);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toMatch(/^3\.\d+\.\d+$/);
  }, SLOW_TEST_MS);

  it('carries the OCI labels of the tree and base it was built from', async () => {
    const l = labels();
    expect(l['org.opencontainers.image.title']).toBe('swift-fetch');
    expect(l['org.opencontainers.image.version']).toBe(pkg.version);
    expect(l['org.opencontainers.image.licenses']).toBe('Apache-2.0');
    expect(l['org.opencontainers.image.revision']).toMatch(/^[0-9a-f]{40}(-dirty)?$/);
    expect(Number.isNaN(Date.parse(l['org.opencontainers.image.created']!))).toBe(false);
    const base = l['org.opencontainers.image.base.name']!;
    expect(base).not.toBe('');
    // What the image adds on top of its base stays small: the app, its production dependencies and tini.
    const size = async (ref: string) => Number((await podmanOk(['image', 'inspect', '--format', '{{.Size}}', ref])).trim());
    const added = (await size(IMAGE)) - (await size(base));
    console.log(`image ${IMAGE}: ${((await size(IMAGE)) / 1e6).toFixed(0)} MB, ${(added / 1e6).toFixed(1)} MB over ${base}`);
    expect(added).toBeLessThan(80e6);
  }, SLOW_TEST_MS);
});
