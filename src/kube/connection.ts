/**
 * Where the API server is and how to prove who we are: from a kubeconfig file (tests, a daemon
 * outside the cluster) or from the in-cluster service-account files. Only what a daemon needs is
 * supported: bearer tokens (inline or a file, re-read so rotated tokens are picked up), client
 * certificates, a CA bundle. Exec plugins and auth providers are refused with a clear message
 * rather than half-supported.
 */
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import YAML from 'yaml';
import { UsageError } from '../core/errors.js';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeConnection {
  /** Base URL of the API server, without a trailing slash. */
  server: string;
  /** PEM bundle the server's certificate must chain to (system roots when absent). */
  ca?: string;
  /** Client certificate authentication. */
  cert?: string;
  key?: string;
  insecureSkipTlsVerify: boolean;
  tlsServerName?: string;
  /** The bearer token to send now, if any (file-based tokens are re-read now and then). */
  token(): Promise<string | undefined>;
  /** Where the settings came from, for messages. */
  source: string;
}

/** A token file re-read at most once a minute: bound service-account tokens rotate under us. */
function tokenFromFile(file: string): () => Promise<string> {
  let cached: { at: number; value: string } | undefined;
  return async () => {
    if (!cached || Date.now() - cached.at > 60_000) cached = { at: Date.now(), value: (await readFile(file, 'utf8')).trim() };
    return cached.value;
  };
}

async function readMaybe(file: string | undefined, data: string | undefined, base: string): Promise<string | undefined> {
  if (data) return Buffer.from(data, 'base64').toString('utf8');
  if (!file) return undefined;
  return readFile(isAbsolute(file) ? file : resolve(base, file), 'utf8');
}

function pick<T>(list: unknown, name: string | undefined, field: string, source: string): T {
  const items = Array.isArray(list) ? (list as Array<Record<string, unknown> | null>) : [];
  const value = items.find((i) => i?.name === name)?.[field];
  if (typeof value !== 'object' || value === null) {
    throw new UsageError(`${source}: no ${field} named ${JSON.stringify(name)}`, 'ESF_KUBECONFIG');
  }
  return value as T;
}

/** Read a kubeconfig file and resolve its current context (or `context`). */
export async function loadKubeconfig(file: string, context?: string): Promise<KubeConnection> {
  let doc: Record<string, unknown>;
  try {
    doc = (YAML.parse(await readFile(file, 'utf8')) ?? {}) as Record<string, unknown>;
  } catch (e) {
    throw new UsageError(`cannot read kubeconfig ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'ESF_KUBECONFIG', { cause: e });
  }
  const base = dirname(resolve(file));
  const ctxName = context ?? (doc['current-context'] as string | undefined);
  const ctx = pick<{ cluster?: string; user?: string }>(doc.contexts, ctxName, 'context', file);
  const cluster = pick<Record<string, unknown>>(doc.clusters, ctx.cluster, 'cluster', file);
  const user = ctx.user ? pick<Record<string, unknown>>(doc.users, ctx.user, 'user', file) : {};
  if (user.exec || user['auth-provider']) {
    throw new UsageError(`${file}: user ${JSON.stringify(ctx.user)} uses an exec plugin or auth provider, which the daemon does not run; use a token, token file or client certificate`, 'ESF_KUBECONFIG');
  }
  const server = typeof cluster.server === 'string' ? cluster.server.replace(/\/+$/, '') : '';
  if (!/^https?:\/\//.test(server)) throw new UsageError(`${file}: cluster ${JSON.stringify(ctx.cluster)} has no http(s) server URL`, 'ESF_KUBECONFIG');
  const str = (o: Record<string, unknown>, k: string) => (typeof o[k] === 'string' && o[k] !== '' ? (o[k] as string) : undefined);
  const conn: KubeConnection = {
    server,
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    token: async () => undefined,
    source: file,
  };
  const ca = await readMaybe(str(cluster, 'certificate-authority'), str(cluster, 'certificate-authority-data'), base);
  if (ca) conn.ca = ca;
  const tlsServerName = str(cluster, 'tls-server-name');
  if (tlsServerName) conn.tlsServerName = tlsServerName;
  const cert = await readMaybe(str(user, 'client-certificate'), str(user, 'client-certificate-data'), base);
  const key = await readMaybe(str(user, 'client-key'), str(user, 'client-key-data'), base);
  if (cert && key) {
    conn.cert = cert;
    conn.key = key;
  }
  const token = str(user, 'token');
  const tokenFile = str(user, 'tokenFile');
  if (token) conn.token = async () => token;
  else if (tokenFile) conn.token = tokenFromFile(isAbsolute(tokenFile) ? tokenFile : resolve(base, tokenFile));
  return conn;
}

/** The in-cluster connection: KUBERNETES_SERVICE_HOST/PORT and the mounted service-account files. */
export async function inClusterConnection(env: NodeJS.ProcessEnv, dir = SERVICE_ACCOUNT_DIR): Promise<KubeConnection> {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT || '443';
  if (!host) {
    throw new UsageError('not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset); set kubernetes.kubeconfig', 'ESF_KUBECONFIG');
  }
  const tokenPath = `${dir}/token`;
  let ca: string;
  try {
    await readFile(tokenPath, 'utf8');
    ca = await readFile(`${dir}/ca.crt`, 'utf8');
  } catch (e) {
    throw new UsageError(`no service-account credentials in ${dir} (${(e as NodeJS.ErrnoException).code}): is automountServiceAccountToken off?`, 'ESF_KUBECONFIG', { cause: e });
  }
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca,
    insecureSkipTlsVerify: false,
    token: tokenFromFile(tokenPath),
    source: `in-cluster service account (${dir})`,
  };
}
