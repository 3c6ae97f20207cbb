/**
 * A pull loads what a pull needs. The S3 client and the AWS credential chain, the daemon's parts
 * (metrics, watchers, the mirror, the config parser) cost ~25-30 MB of resident memory when the
 * CLI loaded them all at start (docs/benchmarks.md, "Memory"); they are now loaded by the commands
 * and refs that use them. The process's package loads are traced with a module resolve hook.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { repoRoot, runCli, tmpDir } from '../support/index.js';

const TRACER = join(repoRoot, 'test/cli/fixtures/trace-packages.mjs');
/** Packages that only s3:// refs, `push`, `daemon` or `gc --config` need. */
const NOT_FOR_A_HUB_PULL = ['@aws-sdk/credential-provider-node', '@aws-sdk/credential-provider-web-identity', '@smithy/signature-v4', '@smithy/hash-node', '@smithy/core', 'fast-xml-parser', 'prom-client', 'chokidar', 'yaml'];

let hub: FakeHub;
beforeAll(async () => {
  hub = await startFakeHub();
  await hub.addRepo({ id: 'org/lazy', files: { 'config.json': '{"model_type":"demo"}', 'model.safetensors': Buffer.alloc(2 * 1024 * 1024, 7) } });
});
afterAll(async () => {
  await hub?.close();
});

async function packagesLoadedBy(args: string[], env: Record<string, string | undefined> = {}): Promise<{ code: number | null; stderr: string; packages: Set<string> }> {
  const dir = await tmpDir();
  const trace = join(dir, 'packages.txt');
  const r = await runCli([...args, '--store', join(dir, 'store'), '--state-dir', join(dir, 'state')], {
    env: { NODE_OPTIONS: `--import=${TRACER}`, SWIFT_FETCH_TRACE_PACKAGES: trace, HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: undefined, HTTPS_PROXY: undefined, HTTP_PROXY: undefined, ...env },
  });
  const text = await readFile(trace, 'utf8').catch(() => '');
  return { code: r.code, stderr: r.stderr, packages: new Set(text.split('\n').filter(Boolean)) };
}

describe('the CLI loads what the command needs', () => {
  it('a hub pull loads neither the S3 client nor the daemon', async () => {
    const r = await packagesLoadedBy(['pull', 'hf://org/lazy', '--quiet']);
    expect(r.code, r.stderr).toBe(0);
    // The trace works: the packages a pull does use are in it.
    expect([...r.packages]).toEqual(expect.arrayContaining(['undici', 'better-sqlite3', 'pino', 'commander']));
    expect(NOT_FOR_A_HUB_PULL.filter((p) => r.packages.has(p))).toEqual([]);
  }, 60_000);

  it('an s3:// ref loads the S3 client when it needs it', async () => {
    // No such bucket endpoint: the pull fails, but only after the S3 adapter was loaded to try.
    const r = await packagesLoadedBy(['pull', 's3://no-bucket/model', '--quiet'], { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9', AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 's', AWS_REGION: 'us-east-1' });
    expect(r.code).not.toBe(0);
    expect(r.packages.has('@smithy/signature-v4')).toBe(true);
  }, 60_000);
});
