/**
 * The daemon's composition root: config in, a running process out. It reads as a list of parts
 * (the store, the rate limiter, peers, metrics, the reconciler, GC, the models-file and imports
 * watchers, the HTTP API), each started by a named function and each stopping itself when the one
 * cancellation root, the daemon's AbortSignal, aborts. stop() aborts it and waits for every part.
 */
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { hostname } from 'node:os';
import { promises as fsp, constants as fsc } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { ExitCode, isSwiftFetchError, NetworkError, StorageError, UsageError, type SwiftFetchError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import { formatRef, parseRef } from '../core/ref.js';
import type { TransferEvent } from '../core/transfer.js';
import { pullModel } from '../pull/index.js';
import type { GcResult } from '../store/gc.js';
import { Store } from '../store/store.js';
import { createP2PNode, PeerToken, type P2PNode } from '../p2p/index.js';
import { startKubeSync, type KubeSyncTuning } from '../kube/index.js';
import { RateLimiter } from '../transfer/index.js';
import { createMirror, type Mirror, type MirrorOptions } from '../mirror/index.js';
import { BackupQueue, backUpWhenReady, type BackupOptions } from '../s3/backup.js';
import { BearerToken } from '../http/bearer.js';
import { keepCertCurrent, loadKeyPair, readPem } from '../http/tls.js';
import { registerApi } from './api.js';
import { ClientLimiter } from './client-limit.js';
import { ApiGuard } from './guard.js';
import { dedupeModels, type DaemonConfig, type ModelSpec } from './config.js';
import { startGcLoop } from './gc.js';
import { onShutdown } from './shutdown.js';
import { heldRevision, startStoreSync } from './store-sync.js';
import { DaemonMetrics } from './metrics.js';
import { Reconciler, type BackoffOptions, type HeldRevision, type PullFn } from './reconciler.js';
import { Router } from './router.js';
import { startImportsWatcher } from './imports.js';
import { loadTrustedKey, type TrustedKey } from '../bundle/index.js';
import { pinFor, pinnedRecord, readLockFile } from '../lock/index.js';
import { watchModelsFile } from './watch.js';

export { type DaemonConfig, type ModelSpec } from './config.js';
export { type ModelState, type ModelStatus, type PullFn } from './reconciler.js';

export interface DaemonDeps {
  /** The pull function (default: the real pullModel). Tests inject their own. */
  pull?: PullFn;
  logger?: Logger;
  env?: NodeJS.ProcessEnv;
  backoff?: BackoffOptions;
  /** How often ready models are re-resolved (follow moved branches); 0 disables. Default 1 h. */
  resyncMs?: number;
  /** Models-file watcher tuning (tests shorten the debounce and disable the poll). */
  watch?: { debounceMs?: number; pollMs?: number };
  /** Lease ttl passed to pulls (tests shorten it). */
  leaseTtlMs?: number;
  /** Grace period for sweeping fresh blobs in GC (store default when absent). */
  gcSweepGraceMs?: number;
  /** How often the store is compared with the daemon's view (default 10 s; 0 never). */
  storeSyncMs?: number;
  /** Backup retry tuning and a hook per finished push (tests). */
  backup?: Pick<BackupOptions, 'retryBaseMs' | 'retryMaxMs' | 'onPushed'>;
  /** P2P tuning (tests: a DNS server, faster discovery rounds). */
  p2p?: Pick<Parameters<typeof createP2PNode>[0], 'dnsServers' | 'discoveryIntervalMs' | 'tuning' | 'nodeId'>;
  /** Kubernetes sync tuning (tests: faster status writes and node polls). */
  kube?: KubeSyncTuning;
  /** Mirror tuning (tests: a short access cache, small tree pages). */
  mirror?: Pick<MirrorOptions, 'accessTtlMs' | 'treePageSize' | 'classifyEveryMs'>;
}

export interface Daemon {
  readonly config: DaemonConfig;
  /** `http://host:port` the API listens on (the real port when the config said 0). */
  readonly url: string;
  readonly reconciler: Reconciler;
  /** Add routes here (p2p: `/v1/peer/...`). */
  readonly router: Router;
  readonly metrics: DaemonMetrics;
  readonly limiter: RateLimiter;
  readonly store: Store;
  readonly logger: Logger;
  /** Aborts when the daemon starts stopping: every part listens to it. */
  readonly signal: AbortSignal;
  /** Run one GC pass now (no-op without gc.maxBytes). */
  collectGarbage(): Promise<GcResult | undefined>;
  /** Stop taking work, abort pulls (they resume from their checkpoint next start), close everything. */
  stop(): Promise<void>;
}

/** How long pulls get to wind down (write their checkpoint) once the daemon stops. */
const PULL_STOP_MS = 7_000;
/** How often the daemon compares what it lists with what the store holds. */
const STORE_SYNC_MS = 10_000;

export async function startDaemon(config: DaemonConfig, deps: DaemonDeps = {}): Promise<Daemon> {
  const env = deps.env ?? process.env;
  const root = deps.logger ?? createLogger(config.logLevel);
  const log = root.child({ module: 'daemon' });
  const store = await openStore(config);
  const importsTrust = await readTrustAndLock(config);
  // The cancellation root. Each part below stops itself when it aborts; `parts` settle when they have.
  const shutdown = new AbortController();
  const signal = shutdown.signal;
  const parts: Array<Promise<void>> = [];
  const holder = `daemon:${hostname()}:${process.pid}`;

  const limiter = new RateLimiter(config.maxRate);
  const p2p = createPeers(config, store, deps, root);
  const usage = cachedUsage(store);
  let reconciler!: Reconciler;
  // Bytes as the engine receives them: each byte once, however many pulls were waiting on it.
  const countBytes = (e: TransferEvent) => {
    if (e.type === 'progress') metrics.addBytes(e.source, e.bytes);
  };
  const metrics = new DaemonMetrics({
    models: () => reconciler.list(),
    activeTransfers: () => reconciler.active,
    rateLimit: () => limiter.rate,
    storeUsage: usage.get,
  });
  const mirror = await startMirror(config, store, deps, { env, logger: root, limiter, metrics, p2p });
  // Every pull's engine events: byte metrics, and the mirror, which serves files a pull is fetching.
  const tap = {
    onEvent: (e: TransferEvent) => {
      countBytes(e);
      mirror?.tap.onEvent(e);
    },
    ...(mirror ? { onChunk: mirror.tap.onChunk } : {}),
  };
  reconciler = new Reconciler({
    pull: deps.pull ?? pullModel,
    pullOptions: () => {
      // A daemon publishes into a volume pods start from: make bytes durable before publishing.
      const o: Parameters<PullFn>[1] = { store: config.store, stateDir: config.stateDir, limiter, env, logger: root, holder, fsync: true };
      if (config.connections) o.connections = config.connections;
      if (config.chunkSize) o.chunkSize = config.chunkSize;
      if (deps.leaseTtlMs) o.leaseTtlMs = deps.leaseTtlMs;
      o.engineHooks = p2p ? p2p.engineHooks(tap) : tap;
      if (config.replicas?.length) o.replicas = config.replicas;
      if (config.lockFile) o.lock = { file: config.lockFile, strict: Boolean(config.locked) };
      return o;
    },
    concurrency: config.maxConcurrentPulls,
    onDemand: { maxRequested: config.api.maxRequested, forgetFailedAfterMs: config.api.forgetFailedAfterMs },
    logger: root,
    backoff: deps.backoff,
    resyncMs: deps.resyncMs,
    fromStore: (spec) => heldFor(store, spec, config),
    onPullDone: (status, error) => {
      metrics.pullFinished(error === undefined, isSwiftFetchError(error) && error.exitCode === ExitCode.integrity);
      if (error === undefined && status.commit) {
        touch(store, reconciler, status.ref, status.commit);
        gc.schedule(5_000);
      }
    },
  });
  parts.push(onShutdown(signal, () => reconciler.stop(PULL_STOP_MS)));
  if (config.backup) {
    // Declared models that become ready are pushed to the backup bucket (once per revision).
    const backup = backUpWhenReady(reconciler, new BackupQueue({ ...config.backup, store: config.store, env, limiter, logger: root, ...deps.backup }));
    parts.push(onShutdown(signal, () => backup.stop()));
  }
  const gc = startGcLoop({
    config, store, reconciler, logger: root, holder, sweepGraceMs: deps.gcSweepGraceMs, signal,
    onCollected: (res) => {
      metrics.gcFreedBytes(res.freedBytes);
      usage.invalidate();
    },
  });
  parts.push(gc.closed);
  parts.push(startStoreSync({ store, reconciler, intervalMs: deps.storeSyncMs ?? STORE_SYNC_MS, logger: root, signal }).closed);

  let url: string;
  const router = new Router();
  try {
    const declared = await followDeclared(config, reconciler, deps, root, env, signal);
    parts.push(declared.closed);
    if (config.kubernetes.enabled) {
      // ModelCaches add to the declared models; the sync never blocks or stops the daemon.
      const kube = startKubeSync({ settings: config.kubernetes, env, logger: root, models: reconciler, store, tuning: deps.kube, signal, declare: declared.setKubeModels });
      parts.push(onShutdown(signal, () => kube.close()));
    }
    if (config.imports) {
      // Bundles dropped into `imports` land in the store: their models are listed (ready) at once, and
      // a model that failed for want of a network may now be satisfied from them.
      const imports = await startImportsWatcher({
        dir: config.imports, store: config.store, logger: root, ...(importsTrust.length > 0 ? { trust: importsTrust } : {}),
        onImported: ({ result }) => {
          for (const m of result.models) {
            const ref = parseRef(m.ref, env);
            reconciler.adopt({ ref, key: formatRef(ref) }, { commit: m.commit, path: m.path, bytes: m.bytes });
          }
          reconciler.retryFailedNow();
        },
      });
      parts.push(onShutdown(signal, () => imports.close()));
    }
    registerApi(router, {
      reconciler, metrics, limiter, env, logger: root, signal, guard: apiGuard(config, metrics, log),
      notReady: readiness(config, reconciler, signal),
      onRequested: (s) => {
        if (s.commit) touch(store, reconciler, s.ref, s.commit);
      },
    });
    if (mirror) {
      mirror.register(router);
      parts.push(onShutdown(signal, () => mirror.stop()));
    }
    if (p2p) {
      mountPeers(p2p, router, metrics);
      parts.push(onShutdown(signal, () => p2p.stop()));
    }
    url = await listen(config, router, signal, parts, log);
  } catch (e) {
    shutdown.abort();
    await Promise.allSettled(parts);
    throw e;
  }

  await p2p?.start();
  reconciler.start();
  gc.schedule(Math.min(60_000, config.gc.intervalMs));
  log.info({ url, store: config.store, models: reconciler.list().map((m) => m.ref), maxRate: config.maxRate }, 'daemon started');

  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      log.info('stopping: no new work, aborting pulls in flight');
      shutdown.abort();
      await Promise.allSettled(parts);
      log.info('stopped');
    })());

  return { config, url, reconciler, router, metrics, limiter, store, logger: root, signal, collectGarbage: gc.collect, stop };
}

/**
 * What imports and pulls will rely on, read now: a missing or invalid lock, or a trust key that is
 * not one, stops the start (exit 3 / 2). Pulls read the lock again each time, so an edited lock
 * applies to the next pull.
 */
async function readTrustAndLock(config: DaemonConfig): Promise<TrustedKey[]> {
  if (config.lockFile) await readLockFile(config.lockFile);
  return (config.importsTrust ?? []).map((f) => loadTrustedKey(f, 'imports.trust'));
}

/**
 * What the daemon serves after a failed pull. With a lock, only the locked commit holding the
 * locked files counts: a revision the lock does not pin is never served in its place.
 */
async function heldFor(store: Store, spec: ModelSpec, config: DaemonConfig): Promise<HeldRevision | undefined> {
  if (!config.lockFile) return heldRevision(store, spec);
  // A lock that cannot be read now: serve nothing, rather than something it may not pin.
  const pinned = await pinFor(spec.ref, { file: config.lockFile }).catch(() => null);
  if (pinned === null) return undefined;
  if (!pinned) return config.locked ? undefined : heldRevision(store, spec);
  const rec = await pinnedRecord(store, spec.ref, pinned.pin);
  return rec ? { commit: rec.commit, path: rec.paths.plain, bytes: rec.bytes } : undefined;
}

async function openStore(config: DaemonConfig): Promise<Store> {
  try {
    await fsp.mkdir(config.stateDir, { recursive: true });
  } catch (e) {
    throw new StorageError(`cannot create state directory ${config.stateDir}: ${(e as Error).message}`, 'ESF_STORAGE', { cause: e });
  }
  const store = new Store(config.store);
  await store.init();
  return store;
}

/**
 * Who may use the node API. The token file is read now: a missing or empty `api.tokenFile` stops
 * the start (exit 2) rather than leaving the API open.
 */
function apiGuard(config: DaemonConfig, metrics: DaemonMetrics, log: Logger): ApiGuard {
  const token = config.api.tokenFile ? BearerToken.fromFile(config.api.tokenFile, 'api.tokenFile') : undefined;
  if (!token && !/^(127\.|::1$|localhost$)/.test(config.listen.host)) {
    log.warn({ listen: `${config.listen.host}:${config.listen.port}` }, 'no api.tokenFile: pulls and config changes are taken only from loopback clients');
  }
  return new ApiGuard({
    token,
    protectReads: config.api.protectReads,
    limiter: new ClientLimiter({ perMinute: config.api.requestsPerMinute }),
    onRefused: (reason) => metrics.apiRefusedRequest(reason),
  });
}

/** The hub mirror (off unless configured): fetches through the same engine hooks (P2P) as pulls. */
async function startMirror(
  config: DaemonConfig, store: Store, deps: DaemonDeps,
  o: { env: NodeJS.ProcessEnv; logger: Logger; limiter: RateLimiter; metrics: DaemonMetrics; p2p: P2PNode | undefined },
): Promise<Mirror | undefined> {
  if (!config.mirror) return undefined;
  return createMirror({
    store, stateDir: config.stateDir, env: o.env, registry: o.metrics.registry, logger: o.logger, limiter: o.limiter, fsync: true,
    holder: `mirror:${hostname()}:${process.pid}`,
    engineHooks: (t) => (o.p2p ? o.p2p.engineHooks(t) : t),
    onBytes: (source, n) => o.metrics.addBytes(source, n),
    ...(config.mirror.allow ? { allow: config.mirror.allow } : {}),
    ...(config.connections ? { connections: config.connections } : {}),
    ...(config.chunkSize ? { chunkSize: config.chunkSize } : {}),
    ...(deps.leaseTtlMs ? { leaseTtlMs: deps.leaseTtlMs } : {}),
    ...deps.mirror,
  });
}

/** Peer-to-peer sharing needs the shared peer token: without one, no peer routes and no sharing. */
function createPeers(config: DaemonConfig, store: Store, deps: DaemonDeps, logger: Logger): P2PNode | undefined {
  if (!config.peers.tokenFile) return undefined;
  return createP2PNode({
    store,
    stateDir: config.stateDir,
    token: PeerToken.fromFile(config.peers.tokenFile, 'peers.tokenFile'),
    static: config.peers.static,
    ...(config.peers.dns ? { dns: config.peers.dns } : {}),
    port: config.peers.port,
    ...peerTls(config),
    uploadMaxRate: config.peers.uploadMaxRate,
    uploadConcurrency: config.peers.uploadConcurrency,
    ...(deps.p2p ?? {}),
    logger,
  });
}

/**
 * With `tls`, peers (the same deployment) serve HTTPS too: discovered addresses are reached over
 * https, checked against `peers.caFile` and `peers.serverName` (default `peers.dns`, a name every
 * daemon's certificate can carry, unlike its pod IP).
 */
function peerTls(config: DaemonConfig): Pick<Parameters<typeof createP2PNode>[0], 'scheme' | 'trust'> {
  const p = config.peers;
  const serverName = p.serverName ?? (config.tls ? p.dns?.replace(/\.$/, '') : undefined);
  const trust = { ...(p.caFile ? { ca: readPem(p.caFile, 'peers.caFile') } : {}), ...(serverName ? { serverName } : {}) };
  return { scheme: config.tls ? 'https' : 'http', ...(Object.keys(trust).length > 0 ? { trust } : {}) };
}

function mountPeers(p2p: P2PNode, router: Router, metrics: DaemonMetrics): void {
  const server = p2p.registerRoutes(router);
  metrics.attachPeers({
    onAdd: (fn) => void p2p.counters.onAdd(fn),
    peerStates: () => {
      const live = p2p.discovery.live().length;
      return { live, down: p2p.discovery.all().length - live, quarantined: p2p.discovery.quarantinedPeers().length };
    },
    activeUploads: () => server.activeUploads,
  });
}

/** Store usage for metrics scrapes: usage walks every blob, and scrapes every few seconds must not each cost a disk scan. */
function cachedUsage(store: Store, ttlMs = 15_000) {
  let cached: { at: number; value: Promise<{ usedBytes: number; freeBytes: number }> } | undefined;
  return {
    get: () => {
      if (!cached || Date.now() - cached.at > ttlMs) {
        const entry = { at: Date.now(), value: store.usage() };
        entry.value.catch(() => {
          if (cached === entry) cached = undefined;
        });
        cached = entry;
      }
      return cached.value;
    },
    invalidate: () => {
      cached = undefined;
    },
  };
}

/** A use, for GC's least-recently-used order (best effort: a failure only makes GC's order older). */
function touch(store: Store, reconciler: Reconciler, key: string, commit: string): void {
  const spec = reconciler.spec(key);
  if (spec) void store.touch(spec.ref, commit).catch(() => undefined);
}

/** `/readyz`: undefined when ready, else why not. */
function readiness(config: DaemonConfig, reconciler: Reconciler, signal: AbortSignal): () => Promise<string | undefined> {
  return async () => {
    if (signal.aborted) return 'shutting down';
    try {
      await fsp.access(config.store, fsc.R_OK);
    } catch (e) {
      return `store ${config.store} not readable (${(e as NodeJS.ErrnoException).code})`;
    }
    return reconciler.isStarted ? undefined : 'first reconcile not scheduled yet';
  };
}

/**
 * Declared = config models + models-file models + this node's ModelCaches (the config wins on
 * duplicates), kept current as the file and the caches change.
 */
async function followDeclared(
  config: DaemonConfig, reconciler: Reconciler, deps: DaemonDeps, logger: Logger, env: NodeJS.ProcessEnv, signal: AbortSignal,
): Promise<{ closed: Promise<void>; setKubeModels: (specs: ModelSpec[]) => void }> {
  let fileModels: ModelSpec[] = [];
  let kubeModels: ModelSpec[] = [];
  const apply = () => reconciler.setDeclared(dedupeModels([...config.models, ...fileModels, ...kubeModels]));
  const watcher = config.modelsFile
    ? await watchModelsFile(config.modelsFile, {
        logger,
        env,
        debounceMs: deps.watch?.debounceMs,
        pollMs: deps.watch?.pollMs,
        onChange: (specs) => {
          fileModels = specs;
          apply();
        },
      })
    : undefined;
  apply();
  const setKubeModels = (specs: ModelSpec[]) => {
    kubeModels = specs;
    apply();
  };
  return { closed: onShutdown(signal, () => watcher?.close()), setKubeModels };
}

/**
 * Serve the API on `listen`, over HTTPS with `tls` (the certificate follows its files). On shutdown
 * the listener stops accepting and idle connections close;
 * event streams end themselves with a final event; once every other part has stopped (pulls wound
 * down, peer long-polls released), whatever connection is still open is cut. Resolves with the URL (the real port when the config said 0).
 */
async function listen(config: DaemonConfig, router: Router, signal: AbortSignal, parts: Array<Promise<void>>, log: Logger): Promise<string> {
  const handler = (req: IncomingMessage, res: ServerResponse) => void router.handle(req, res);
  const tls = config.tls;
  const server = tls ? createHttpsServer(loadKeyPair(tls), handler) : createServer(handler);
  if (tls) {
    const stop = keepCertCurrent(server as HttpsServer, tls, {
      onReload: () => log.info({ certFile: tls.certFile }, 'TLS certificate reloaded'),
      onError: (e) => log.warn({ certFile: tls.certFile, err: e.message }, 'TLS certificate changed but does not load; keeping the last good one'),
    });
    parts.push(onShutdown(signal, stop));
  }
  // Requests must not hang a shutdown. With the mirror on, hub clients (httpx) drop idle
  // connections after 5 s: a server closing at the same moment resets a request already on its
  // way, so outlive them (shutdown closes idle connections anyway).
  server.keepAliveTimeout = config.mirror ? 65_000 : 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((e: NodeJS.ErrnoException) => {
    throw listenError(`${config.listen.host}:${config.listen.port}`, e);
  });
  const self: Promise<void> = onShutdown(signal, async () => {
    const closed = new Promise<void>((r) => server.close(() => r()));
    server.closeIdleConnections();
    await Promise.allSettled(parts.filter((p) => p !== self));
    server.closeAllConnections();
    await closed;
  });
  parts.push(self);
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return `${tls ? 'https' : 'http'}://${host}:${addr.port}`;
}

/**
 * Why the API cannot listen. The address is configuration (`listen:` / `--listen`): a port another
 * process holds, a privileged port or an address this host does not have is bad input (2), with what
 * to change; anything else is the network's (7). Never "storage": no disk is involved.
 */
function listenError(address: string, e: NodeJS.ErrnoException): SwiftFetchError {
  const why: Record<string, string> = {
    EADDRINUSE: 'the address is already in use (another process listens there): stop it, or choose another port with listen: or --listen',
    EACCES: 'permission denied (ports below 1024 need privileges): choose a port above 1023 with listen: or --listen',
    EADDRNOTAVAIL: 'this host has no such address: choose one of its addresses, or 0.0.0.0, with listen: or --listen',
  };
  const reason = e.code ? why[e.code] : undefined;
  if (reason) return new UsageError(`cannot listen on ${address}: ${reason}`, 'ESF_LISTEN', { cause: e });
  return new NetworkError(`cannot listen on ${address}: ${e.code ?? e.message}`, 'ESF_LISTEN', { cause: e });
}
