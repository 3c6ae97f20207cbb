/**
 * A real Kubernetes API server for tests (what controller projects call envtest): Debian's etcd and
 * a kube-apiserver built by .ci/install-kube.sh, on loopback at free ports, with a token auth file,
 * RBAC, and service-account signing keys generated for this run. No kubelet and no controllers:
 * objects only. One per test file (start-up is a few seconds).
 *
 * kubectl is the one .ci/install-kube.sh builds (never whatever is on PATH), so a new CI machine
 * runs the same client. Outside CI a missing binary skips the suite with the reason; with CI=true
 * the suite runs and fails on it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Agent, request } from 'undici';
import { helmPath, toolsCacheDir } from '../chart/support.js';
import { freePort } from './net.js';
import { repoRoot } from './paths.js';
import { run, type RunResult } from './spawn.js';

const isCI = process.env.CI === 'true';

function executable(p: string | undefined): p is string {
  if (!p) return false;
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) if (dir && executable(join(dir, name))) return join(dir, name);
  return undefined;
}

/** The binaries, from their env overrides, else the install script's cache (etcd: else PATH). */
export const kubeTools = {
  apiserver: process.env.KUBE_APISERVER_BIN ?? join(toolsCacheDir(), 'kube-apiserver'),
  kubectl: process.env.KUBECTL_BIN ?? join(toolsCacheDir(), 'kubectl'),
  etcd: process.env.ETCD_BIN ?? (executable(join(toolsCacheDir(), 'etcd')) ? join(toolsCacheDir(), 'etcd') : onPath('etcd')),
  helm: helmPath,
};

/** Why the kube suites cannot run here, or undefined when every tool is present. */
export function missingKubeTools(needHelm = false): string | undefined {
  const missing = Object.entries(kubeTools)
    .filter(([name, p]) => (name !== 'helm' || needHelm) && !executable(p))
    .map(([name]) => name);
  return missing.length === 0 ? undefined : `${missing.join(', ')} not found (run .ci/install-kube.sh; etcd is Debian's etcd-server)`;
}

/** Whether a kube suite runs: outside CI a missing tool skips it (with the reason printed); in CI it runs and fails. */
export function kubeSuiteRuns(needHelm = false): boolean {
  const why = missingKubeTools(needHelm);
  if (!why || isCI) return true;
  console.warn(`skipping Kubernetes API tests: ${why}`);
  return false;
}


interface Proc {
  child: ChildProcess;
  log: string[];
  exited: Promise<void>;
}

function start(bin: string, args: string[], name: string): Proc {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  const keep = (b: Buffer) => {
    log.push(b.toString());
    if (log.length > 400) log.splice(0, log.length - 400);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.once('error', (e) => log.push(`${name}: ${e.message}`));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return { child, log, exited };
}

export interface Kubeconfig {
  server: string;
  caFile: string;
  token: string;
}

export function kubeconfigYaml(k: Kubeconfig, user = 'user'): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '  - name: test',
    '    cluster:',
    `      server: ${k.server}`,
    `      certificate-authority: ${k.caFile}`,
    'users:',
    `  - name: ${user}`,
    '    user:',
    `      token: ${k.token}`,
    'contexts:',
    '  - name: test',
    '    context:',
    '      cluster: test',
    `      user: ${user}`,
    'current-context: test',
    '',
  ].join('\n');
}

export interface KubeCluster {
  server: string;
  dir: string;
  caFile: string;
  /** An admin (system:masters) kubeconfig. */
  kubeconfig: string;
  adminToken: string;
  /** kubectl as admin (or with another kubeconfig); never rejects on a non-zero exit. */
  kubectl(args: string[], opts?: { kubeconfig?: string; input?: string }): Promise<RunResult>;
  /** kubectl that must succeed; returns stdout. */
  kubectlOk(args: string[], opts?: { kubeconfig?: string; input?: string }): Promise<string>;
  /** helm against this cluster with private config dirs; never rejects. */
  helm(args: string[]): Promise<RunResult>;
  /** A kubeconfig that authenticates as a ServiceAccount, with a token from the TokenRequest API. */
  serviceAccountKubeconfig(namespace: string, name: string): Promise<string>;
  /** GET a path as admin (JSON). */
  get<T>(path: string): Promise<{ status: number; body: T }>;
  /** Server logs, for failure messages. */
  logs(): string;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

export async function startKubeCluster(): Promise<KubeCluster> {
  const why = missingKubeTools();
  if (why) throw new Error(`cannot start a Kubernetes API server: ${why}`);
  // A free port found here can be taken by another test process before etcd or the server binds it.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce();
    } catch (e) {
      if (attempt >= 3 || !/address already in use/.test((e as Error).message)) throw e;
    }
  }
}

async function startOnce(): Promise<KubeCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'sf-kube-'));
  const [etcdClient, etcdPeer, apiPort] = [await freePort(), await freePort(), await freePort()];
  const adminToken = randomBytes(24).toString('hex');
  await writeFile(join(dir, 'tokens.csv'), `${adminToken},admin,admin,"system:masters"\n`, { mode: 0o600 });
  // Service-account token signing keys, new for every run.
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  await writeFile(join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await writeFile(join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
  await mkdir(join(dir, 'certs'));

  const etcdUrl = `http://127.0.0.1:${etcdClient}`;
  const etcd = start(kubeTools.etcd!, [
    '--data-dir', join(dir, 'etcd'),
    '--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl,
    '--listen-peer-urls', `http://127.0.0.1:${etcdPeer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${etcdPeer}`,
    '--initial-cluster', `default=http://127.0.0.1:${etcdPeer}`,
  ], 'etcd');
  running.add(etcd.child);
  const api = start(kubeTools.apiserver, [
    `--etcd-servers=${etcdUrl}`,
    '--bind-address=127.0.0.1', '--advertise-address=127.0.0.1', `--secure-port=${apiPort}`,
    // The server writes a self-signed CA and serving certificate (SAN 127.0.0.1) here.
    `--cert-dir=${join(dir, 'certs')}`,
    `--token-auth-file=${join(dir, 'tokens.csv')}`,
    '--authorization-mode=RBAC',
    '--service-account-issuer=https://kubernetes.default.svc',
    `--service-account-key-file=${join(dir, 'sa.pub')}`,
    `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
    '--service-cluster-ip-range=10.0.0.0/24',
    // No kubelets: the "kubernetes" Endpoints would point at loopback, which the server refuses.
    '--endpoint-reconciler-type=none',
  ], 'kube-apiserver');
  running.add(api.child);

  const server = `https://127.0.0.1:${apiPort}`;
  const caFile = join(dir, 'certs', 'apiserver.crt');
  const kubeconfig = join(dir, 'admin.kubeconfig');
  const logs = () => `--- etcd\n${etcd.log.join('').slice(-3000)}\n--- kube-apiserver\n${api.log.join('').slice(-6000)}`;
  let dispatcher: Agent | undefined;
  const get = async <T>(path: string) => {
    dispatcher ??= new Agent({ connect: { ca: await readFile(caFile, 'utf8') } });
    const res = await request(server + path, { headers: { authorization: `Bearer ${adminToken}` }, dispatcher });
    const text = await res.body.text();
    return { status: res.statusCode, body: (text.startsWith('{') ? JSON.parse(text) : text) as T };
  };

  const stop = async () => {
    await dispatcher?.close();
    for (const p of [api, etcd]) {
      if (p.child.exitCode === null && p.child.signalCode === null) {
        p.child.kill('SIGTERM');
        const t = setTimeout(() => p.child.kill('SIGKILL'), 5_000);
        await p.exited;
        clearTimeout(t);
      }
      running.delete(p.child);
    }
    if (process.env.SWIFT_FETCH_KEEP_TMP !== '1') await rm(dir, { recursive: true, force: true });
  };

  // Ready = /readyz answers 200 (post-start hooks done: RBAC bootstrap roles, priority levels) and
  // the default namespace exists (events about cluster-scoped objects go there).
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (api.child.exitCode !== null || etcd.child.exitCode !== null) {
      const l = logs();
      await stop();
      throw new Error(`the test API server exited during start-up\n${l}`);
    }
    try {
      await readFile(caFile);
      if ((await get('/readyz')).status === 200 && (await get('/api/v1/namespaces/default')).status === 200) break;
    } catch {
      // not listening or no certificate yet
    }
    if (Date.now() > deadline) {
      const l = logs();
      await stop();
      throw new Error(`the test API server was not ready within 90 s\n${l}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  await writeFile(kubeconfig, kubeconfigYaml({ server, caFile, token: adminToken }, 'admin'), { mode: 0o600 });

  const helmDirs = {
    HELM_CONFIG_HOME: join(repoRoot, '.cache/helm/config'),
    HELM_CACHE_HOME: join(repoRoot, '.cache/helm/cache'),
    HELM_DATA_HOME: join(repoRoot, '.cache/helm/data'),
  };
  const kubectl = (args: string[], opts: { kubeconfig?: string; input?: string } = {}) =>
    run(kubeTools.kubectl, ['--kubeconfig', opts.kubeconfig ?? kubeconfig, ...args], opts.input === undefined ? {} : { input: opts.input });
  const kubectlOk = async (args: string[], opts: { kubeconfig?: string; input?: string } = {}) => {
    const r = await kubectl(args, opts);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  return {
    server,
    dir,
    caFile,
    kubeconfig,
    adminToken,
    kubectl,
    kubectlOk,
    helm: (args) => {
      if (!kubeTools.helm) throw new Error('helm not found: set HELM_BIN or run .ci/install-helm.sh');
      return run(kubeTools.helm, args, { env: { ...helmDirs, KUBECONFIG: kubeconfig }, timeoutMs: 180_000 });
    },
    async serviceAccountKubeconfig(namespace, name) {
      const token = (await kubectlOk(['create', 'token', name, '-n', namespace, '--duration=1h'])).trim();
      const file = join(dir, `sa-${namespace}-${name}.kubeconfig`);
      await writeFile(file, kubeconfigYaml({ server, caFile, token }, `${namespace}-${name}`), { mode: 0o600 });
      return file;
    },
    get,
    logs,
    stop,
  };
}
