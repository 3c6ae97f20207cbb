/**
 * A real S3 server for tests: MinIO on loopback, on a free port, with a fresh data folder and fresh
 * root credentials per server. The binary comes from MINIO_BIN (.ci/run exports it from
 * .ci/install-minio.sh), else the tool cache that script fills. Without it tests skip with the
 * reason, except under CI=true, where they fail.
 *
 * `proxy()` puts a byte-counting TCP relay in front of the server: tests count what really crossed
 * the wire, and can cut every connection at once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { Agent } from 'undici';
import { S3Client } from '../../src/s3/client.js';
import { freePort } from './net.js';
import { s3Settings } from '../../src/s3/settings.js';

export function minioBin(): string {
  if (process.env.MINIO_BIN) return process.env.MINIO_BIN;
  const cache = process.env.SWIFT_FETCH_TOOLS_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'swift-fetch', 'bin');
  return join(cache, 'minio');
}

export const MINIO_MISSING = `MinIO not found at ${minioBin()}: run MINIO_BIN=$(bash .ci/install-minio.sh)`;

/** Skip S3 tests when MinIO is missing, except in CI, where `startMinio()` then fails them. */
export function skipWithoutMinio(): boolean {
  if (existsSync(minioBin())) return false;
  if (process.env.CI) return false;
  console.warn(`skipping: ${MINIO_MISSING}`);
  return true;
}


export interface CountingProxy {
  endpoint: string;
  /** Bytes sent from the server to clients (response bytes: headers and bodies). */
  bytesDown(): number;
  /** Bytes sent from clients to the server (requests: headers and bodies). */
  bytesUp(): number;
  reset(): void;
  /** Destroy every open connection (a network blip). */
  cutAll(): void;
  close(): Promise<void>;
}

export interface Minio {
  endpoint: string;
  accessKey: string;
  secretKey: string;
  /** Environment for a swift-fetch process (or pull/push call) talking to this server only. */
  env(extra?: Record<string, string | undefined>): Record<string, string | undefined>;
  /** An S3 client with the root credentials, for arranging fixtures. */
  client: S3Client;
  createBucket(name: string): Promise<void>;
  proxy(): Promise<CountingProxy>;
  /** What the server printed so far (it names its STS role ARNs at startup). */
  log(): string;
  stop(): Promise<void>;
}

/** The AWS variables a test must never inherit from the developer's shell. */
export function cleanAwsEnv(): Record<string, undefined> {
  const out: Record<string, undefined> = {};
  for (const k of [
    'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_DEFAULT_PROFILE', 'AWS_ENDPOINT_URL',
    'AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL_STS', 'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_ROLE_ARN', 'AWS_ROLE_SESSION_NAME', 'AWS_DEFAULT_REGION',
    'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI', 'AWS_CONTAINER_CREDENTIALS_FULL_URI', 'HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy',
  ]) {
    out[k] = undefined;
  }
  return out;
}

/** `env`: extra server settings (an OpenID provider for STS tests). */
export async function startMinio(opts: { env?: Record<string, string> } = {}): Promise<Minio> {
  const bin = minioBin();
  if (!existsSync(bin)) throw new Error(MINIO_MISSING);
  const dir = await mkdtemp(join(tmpdir(), 'swift-fetch-minio-'));
  const port = await freePort();
  const consolePort = await freePort();
  const accessKey = `sf${randomBytes(6).toString('hex')}`;
  const secretKey = randomBytes(18).toString('hex');
  const endpoint = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(bin, ['server', '--address', `127.0.0.1:${port}`, '--console-address', `127.0.0.1:${consolePort}`, join(dir, 'data')], {
    env: {
      PATH: process.env.PATH,
      HOME: dir,
      MINIO_ROOT_USER: accessKey,
      MINIO_ROOT_PASSWORD: secretKey,
      MINIO_BROWSER: 'off',
      MINIO_UPDATE: 'off',
      MINIO_CI_CD: '1',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (b: Buffer) => (log += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (log += b.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 45_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`minio exited with ${child.exitCode}: ${log}`);
    }
    try {
      const res = await request(`${endpoint}/minio/health/live`, { signal: AbortSignal.timeout(2_000) });
      await res.body.dump();
      if (res.statusCode === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`minio did not become ready within 45 s: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const env = (extra: Record<string, string | undefined> = {}) => ({
    ...cleanAwsEnv(),
    AWS_ACCESS_KEY_ID: accessKey,
    AWS_SECRET_ACCESS_KEY: secretKey,
    AWS_ENDPOINT_URL: endpoint,
    AWS_REGION: 'us-east-1',
    // The default chain must never wander off to an instance-metadata address in a test.
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: join(dir, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, 'no-aws-credentials'),
    ...extra,
  });
  // Bounded waits: a stuck request under heavy load fails and is retried instead of hanging a hook.
  const dispatcher = new Agent({ connections: 8, headersTimeout: 30_000, bodyTimeout: 30_000 });
  const client = new S3Client(s3Settings(env() as NodeJS.ProcessEnv), dispatcher);
  const proxies: CountingProxy[] = [];
  return {
    endpoint,
    accessKey,
    secretKey,
    env,
    client,
    async createBucket(name) {
      await client.call({ method: 'PUT', bucket: name, what: `creating bucket ${name}` });
    },
    log: () => log,
    async proxy() {
      const p = await countingProxy(port);
      proxies.push(p);
      return p;
    },
    async stop() {
      await Promise.all(proxies.map((p) => p.close()));
      await dispatcher.close();
      await stop();
    },
  };
}

async function countingProxy(targetPort: number): Promise<CountingProxy> {
  let down = 0;
  let up = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    upstream.on('data', (b: Buffer) => (down += b.length));
    client.on('data', (b: Buffer) => (up += b.length));
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bytesDown: () => down,
    bytesUp: () => up,
    reset: () => {
      down = 0;
      up = 0;
    },
    cutAll: () => {
      for (const s of sockets) s.destroy();
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
