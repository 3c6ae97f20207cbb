/**
 * Shared pieces of the image tests: finding podman, its sandbox settings and the image under test,
 * running podman, and removing what a test created.
 *
 * The image is built by `.ci/build-image.sh` (CI runs it before the tests) and found by name:
 * SWIFT_FETCH_IMAGE, default `localhost/swift-fetch:ci`. The suites that play the chart need helm
 * too. Outside CI a missing podman, image or helm skips them with the reason; under CI=true they run
 * and each test fails on it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { findTool, helmPath, isCI } from '../chart/support.js';
import { repoRoot, run, type RunResult } from '../support/index.js';
export { freePort } from '../support/net.js';

export const IMAGE = process.env.SWIFT_FETCH_IMAGE || 'localhost/swift-fetch:ci';
/** The image's non-root user, the chart's runAsUser. */
export const UID = 10001;
/**
 * Timeout of each image test: containers start in seconds on an idle machine and several times
 * that on a loaded 2-core one; the waits inside the tests have their own, shorter limits.
 */
export const SLOW_TEST_MS = 240_000;

/** The containers.conf `.ci/podman-setup.sh` writes (runc, cgroupfs, no rlimits), unless one is set. */
function containersConf(): string | undefined {
  if (process.env.CONTAINERS_CONF) return process.env.CONTAINERS_CONF;
  const cache = process.env.SWIFT_FETCH_IMAGE_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'swift-fetch/image');
  const conf = join(cache, 'containers.conf');
  return existsSync(conf) ? conf : undefined;
}

const podmanPath = findTool('podman', 'PODMAN_BIN');
const conf = containersConf();
const podmanEnv = conf ? { CONTAINERS_CONF: conf } : {};

/** Why the image tests cannot run here, or undefined when they can. */
function missing(): string | undefined {
  if (!podmanPath) return 'podman not found (PODMAN_BIN, PATH): apt-get install podman runc';
  try {
    execFileSync(podmanPath, ['image', 'exists', IMAGE], { env: { ...process.env, ...podmanEnv }, stdio: 'ignore' });
  } catch {
    return `image ${IMAGE} not found: run \`bash .ci/build-image.sh\` (SWIFT_FETCH_IMAGE names another image)`;
  }
  return undefined;
}

const imageMissing = missing();

if (!imageMissing) {
  // A stale image is tested as it is, with a warning: rebuilding is the build script's job.
  const revision = labels()['org.opencontainers.image.revision'];
  const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repoRoot }).toString().trim();
  if (revision && revision !== head) console.warn(`note: ${IMAGE} was built from ${revision}, the tree is at ${head}: rebuild with .ci/build-image.sh`);
}

/** What a suite needs: the image (and podman), or also helm to render the chart. */
export type Needs = 'image' | 'chart';

function whyNot(needs: Needs): string | undefined {
  if (imageMissing) return imageMissing;
  if (needs === 'chart' && !helmPath) return 'helm not found (HELM_BIN, ~/.cache/swift-fetch/bin, PATH): run .ci/install-helm.sh';
  return undefined;
}

/**
 * Whether a suite runs. Outside CI what is missing skips it with the reason printed; in CI it runs
 * anyway, so that every test fails on `requireImage()`.
 */
export function imageTestsRun(needs: Needs = 'image'): boolean {
  const why = whyNot(needs);
  if (!why) return true;
  if (isCI) return true;
  console.warn(`skipping image tests: ${why}`);
  return false;
}

/** Whether everything is here (for a suite's beforeAll: no set-up when not). */
export function imageReady(needs: Needs = 'image'): boolean {
  return whyNot(needs) === undefined;
}

/**
 * For beforeEach: fails the test when something is missing (reached only in CI: elsewhere the suite
 * is skipped), so that each test counts as failed rather than the suite as skipped.
 */
export function requireImage(needs: Needs = 'image'): void {
  const why = whyNot(needs);
  if (why) throw new Error(`image tests cannot run: ${why}`);
}

/** `podman ARGS`, never rejecting on a non-zero exit. */
export function podman(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(podmanPath!, args, { env: podmanEnv, ...opts });
}

/** `podman ARGS` that must succeed; returns stdout. */
export async function podmanOk(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await podman(args, opts);
  if (r.code !== 0) throw new Error(`podman ${args.join(' ')} exited ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  return r.stdout;
}

export function labels(): Record<string, string> {
  const out = execFileSync(podmanPath!, ['image', 'inspect', '--format', '{{json .Labels}}', IMAGE], { env: { ...process.env, ...podmanEnv } });
  return JSON.parse(out.toString()) as Record<string, string>;
}

/** A name unique to this test process, for containers, pods, volumes and secrets. */
export function uniqueName(what: string): string {
  return `sf-${what}-${process.pid}-${Math.random().toString(36).slice(2, 7)}`;
}


type Kind = 'container' | 'pod' | 'volume' | 'secret';
const created: Array<{ kind: Kind; name: string }> = [];

/** Remember a podman object so it is force-removed after the file's tests, whatever happened. */
export function track(kind: Kind, name: string): string {
  created.push({ kind, name });
  return name;
}

afterAll(async () => {
  if (!podmanPath) return;
  // Pods and containers before the volumes and secrets they use.
  const order: Kind[] = ['pod', 'container', 'volume', 'secret'];
  for (const kind of order) {
    for (const { name } of created.filter((c) => c.kind === kind).reverse()) {
      const args = kind === 'secret' ? ['secret', 'rm', name] : [kind, 'rm', '-f', ...(kind === 'pod' || kind === 'container' ? ['-t', '0'] : []), name];
      await podman(args, { timeoutMs: 60_000 });
    }
  }
  created.length = 0;
});

/** State and exit code of a container. */
export async function containerState(name: string): Promise<{ status: string; exitCode: number; startedAt: string; finishedAt: string }> {
  const out = await podmanOk(['container', 'inspect', '--format', '{{json .State}}', name]);
  const s = JSON.parse(out) as { Status: string; ExitCode: number; StartedAt: string; FinishedAt: string };
  return { status: s.Status, exitCode: s.ExitCode, startedAt: s.StartedAt, finishedAt: s.FinishedAt };
}

export async function logs(name: string): Promise<string> {
  const r = await podman(['logs', name]);
  return r.stdout + r.stderr;
}
