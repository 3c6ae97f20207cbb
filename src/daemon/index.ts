/**
 * The daemon's composition root: config in, a running process out. Owns the store handle, the
 * process-wide rate limiter, the reconciler, the models-file watcher, the HTTP server and the GC
 * loop, and takes them down in order on stop().
 */
import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import { promises as fsp, constants as fsc } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { ExitCode, isSwiftFetchError, StorageError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import { repoKey } from '../core/ref.js';
import { pullModel } from '../pull/index.js';
import { revisionKey, runGc, type GcResult } from '../store/gc.js';
import { Store } from '../store/store.js';
import { createP2PNode, PeerToken, type P2PNode } from '../p2p/index.js';
import { createMirror, type Mirror, type MirrorOptions } from '../mirror/index.js';
import { RateLimiter } from '../transfer/index.js';
import { registerApi } from './api.js';
import { dedupeModels, type DaemonConfig, type ModelSpec } from './config.js';
import { DaemonMetrics } from './metrics.js';
import { Reconciler, type BackoffOptions, type PullFn } from './reconciler.js';
import { Router } from './router.js';
import { startImportsWatcher, type ImportsWatcher } from './imports.js';
import { watchModelsFile, type ModelsFileWatcher } from './watch.js';

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
  /** P2P tuning (tests: a DNS server, faster discovery rounds). */
  p2p?: Pick<Parameters<typeof createP2PNode>[0], 'dnsServers' | 'discoveryIntervalMs' | 'tuning' | 'nodeId'>;
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
  /** Run one GC pass now (no-op without gc.maxBytes). */
  collectGarbage(): Promise<GcResult | undefined>;
  /** Stop taking work, abort pulls (they resume from their checkpoint next start), close everything. */
  stop(): Promise<void>;
}

export async function startDaemon(config: DaemonConfig, deps: DaemonDeps = {}): Promise<Daemon> {
  const env = deps.env ?? process.env;
  const root = deps.logger ?? createLogger(config.logLevel);
  const log = root.child({ module: 'daemon' });
  const store = new Store(config.store);
  try {
    await fsp.mkdir(config.stateDir, { recursive: true });
  } catch (e) {
    throw new StorageError(`cannot create state directory ${config.stateDir}: ${(e as Error).message}`, 'ESF_STORAGE', { cause: e });
  }
  await store.init();

  const limiter = new RateLimiter(config.maxRate);
  // Peer-to-peer sharing needs the shared peer token: without one, no peer routes and no sharing.
  const p2p: P2PNode | undefined = config.peers.tokenFile
    ? createP2PNode({
        store,
        stateDir: config.stateDir,
        token: PeerToken.fromFile(config.peers.tokenFile),
        static: config.peers.static,
        ...(config.peers.dns ? { dns: config.peers.dns } : {}),
        port: config.peers.port,
        uploadMaxRate: config.peers.uploadMaxRate,
        uploadConcurrency: config.peers.uploadConcurrency,
        ...(deps.p2p ?? {}),
        logger: root,
      })
    : undefined;
  const holder = `daemon:${hostname()}:${process.pid}`;
  let reconciler!: Reconciler;
  let usageCache: { at: number; value: Promise<{ usedBytes: number; freeBytes: number }> } | undefined;
  const storeUsage = () => {
    // Usage walks every blob; scrapes every few seconds must not turn into a disk scan each.
    if (!usageCache || Date.now() - usageCache.at > 15_000) {
      usageCache = { at: Date.now(), value: store.usage() };
      usageCache.value.catch(() => (usageCache = undefined));
    }
    return usageCache.value;
  };
  const metrics = new DaemonMetrics({
    models: () => reconciler.list(),
    activeTransfers: () => reconciler.active,
    rateLimit: () => limiter.rate,
    storeUsage,
  });

  // The hub mirror fetches through the same engine hooks (P2P), and follows the reconciler's pulls.
  const mirror: Mirror | undefined = config.mirror
    ? await createMirror({
        store, stateDir: config.stateDir, env, registry: metrics.registry, logger: root, limiter, fsync: true,
        holder: `mirror:${hostname()}:${process.pid}`,
        engineHooks: (tap) => (p2p ? p2p.engineHooks(tap) : tap),
        onBytes: (source, n) => metrics.addBytes(source, n),
        ...(config.mirror.allow ? { allow: config.mirror.allow } : {}),
        ...(config.connections ? { connections: config.connections } : {}),
        ...(config.chunkSize ? { chunkSize: config.chunkSize } : {}),
        ...(deps.leaseTtlMs ? { leaseTtlMs: deps.leaseTtlMs } : {}),
        ...deps.mirror,
      })
    : undefined;

  reconciler = new Reconciler({
    pull: deps.pull ?? pullModel,
    pullOptions: () => {
      // A daemon publishes into a volume pods start from: make bytes durable before publishing.
      const o: Parameters<PullFn>[1] = { store: config.store, stateDir: config.stateDir, limiter, env, logger: root, holder, fsync: true };
      if (config.connections) o.connections = config.connections;
      if (config.chunkSize) o.chunkSize = config.chunkSize;
      if (deps.leaseTtlMs) o.leaseTtlMs = deps.leaseTtlMs;
      if (p2p) o.engineHooks = p2p.engineHooks(mirror?.tap);
      else if (mirror) o.engineHooks = mirror.tap;
      return o;
    },
    concurrency: config.maxConcurrentPulls,
    logger: root,
    backoff: deps.backoff,
    resyncMs: deps.resyncMs,
    onBytes: (source, n) => metrics.addBytes(source, n),
    onPullDone: (status, error) => {
      metrics.pullFinished(error === undefined, isSwiftFetchError(error) && error.exitCode === ExitCode.integrity);
      if (error === undefined && status.commit) {
        const ref = reconciler.declaredSpecs().find((s) => s.key === status.ref)?.ref ?? parseKey(status.ref);
        if (ref) void store.touch(ref, status.commit).catch(() => undefined);
        if (config.gc.maxBytes > 0) scheduleGc(5_000);
      }
    },
  });

  // Declared = config models + models-file models (the config wins on duplicates).
  let fileModels: ModelSpec[] = [];
  const applyDeclared = () => reconciler.setDeclared(dedupeModels([...config.models, ...fileModels]));
  let watcher: ModelsFileWatcher | undefined;
  if (config.modelsFile) {
    watcher = await watchModelsFile(config.modelsFile, {
      logger: root,
      env,
      debounceMs: deps.watch?.debounceMs,
      pollMs: deps.watch?.pollMs,
      onChange: (specs) => {
        fileModels = specs;
        applyDeclared();
      },
    });
  }
  applyDeclared();

  // Bundles dropped into `imports` land in the store; a model that failed for want of a network
  // may now be satisfied from it.
  let imports: ImportsWatcher | undefined;
  if (config.imports) {
    imports = await startImportsWatcher({
      dir: config.imports,
      store: config.store,
      logger: root,
      onImported: () => reconciler.retryFailedNow(),
    });
  }

  // ---- GC --------------------------------------------------------------------------------
  let gcTimer: NodeJS.Timeout | undefined;
  let gcRunning: Promise<GcResult | undefined> | undefined;
  let stopping = false;
  const pinnedKeys = async (): Promise<Set<string>> => {
    const pinned = new Set<string>();
    const statuses = new Map(reconciler.list().map((s) => [s.ref, s]));
    for (const spec of reconciler.declaredSpecs()) {
      const known = [statuses.get(spec.key)?.commit, await store.localCommit(spec.ref, spec.ref.revision).catch(() => undefined)];
      const commits = known.filter((c): c is string => typeof c === 'string');
      // Never resolved here and never pulled into this store under this name: protect the whole repo.
      if (commits.length === 0) pinned.add(repoKey(spec.ref));
      for (const c of commits) pinned.add(revisionKey({ ...spec.ref, commit: c }));
    }
    return pinned;
  };
  const collectGarbage = async (): Promise<GcResult | undefined> => {
    if (config.gc.maxBytes <= 0 || stopping) return undefined;
    if (gcRunning) return gcRunning;
    gcRunning = (async () => {
      try {
        const res = await runGc(store, {
          maxBytes: config.gc.maxBytes,
          pinned: await pinnedKeys(),
          inUse: reconciler.inUseKeys(),
          holder: `gc:${holder}`,
          ...(deps.gcSweepGraceMs === undefined ? {} : { sweepGraceMs: deps.gcSweepGraceMs }),
        });
        if (res.ran && (res.evicted.length > 0 || res.freedBlobs > 0)) {
          log.info({ evicted: res.evicted.map((e) => `${e.ref}@${e.commit}`), freedBytes: res.freedBytes, usedBytes: res.usedBytesAfter }, 'garbage collected');
        }
        if (res.overQuota) log.warn({ usedBytes: res.usedBytesAfter, maxBytes: config.gc.maxBytes }, 'store over quota; only declared or in-use models remain');
        metrics.gcFreedBytes(res.freedBytes);
        usageCache = undefined;
        return res;
      } catch (e) {
        log.warn({ err: (e as Error).message }, 'garbage collection failed');
        return undefined;
      } finally {
        gcRunning = undefined;
      }
    })();
    return gcRunning;
  };
  function scheduleGc(delayMs: number): void {
    if (stopping || config.gc.maxBytes <= 0) return;
    if (gcTimer) clearTimeout(gcTimer);
    gcTimer = setTimeout(() => {
      gcTimer = undefined;
      void collectGarbage().finally(() => scheduleGc(config.gc.intervalMs));
    }, delayMs);
    gcTimer.unref();
  }

  // ---- HTTP ------------------------------------------------------------------------------
  const router = new Router();
  registerApi(router, {
    reconciler,
    metrics,
    limiter,
    env,
    logger: root,
    notReady: async () => {
      if (stopping) return 'shutting down';
      try {
        await fsp.access(config.store, fsc.R_OK);
      } catch (e) {
        return `store ${config.store} not readable (${(e as NodeJS.ErrnoException).code})`;
      }
      return reconciler.isStarted ? undefined : 'first reconcile not scheduled yet';
    },
    onRequested: (s) => {
      const ref = parseKey(s.ref);
      if (ref && s.commit) void store.touch(ref, s.commit).catch(() => undefined);
    },
  });
  mirror?.register(router);
  const peerServer = p2p?.registerRoutes(router);
  if (p2p && peerServer) {
    metrics.attachPeers({
      onAdd: (fn) => void p2p.counters.onAdd(fn),
      peerStates: () => {
        const live = p2p.discovery.live().length;
        return { live, down: p2p.discovery.all().length - live, quarantined: p2p.discovery.quarantinedPeers().length };
      },
      activeUploads: () => peerServer.activeUploads,
    });
  }
  const server: Server = createServer((req, res) => void router.handle(req, res));
  // Requests must not hang a shutdown; SSE streams are closed explicitly in stop().
  server.keepAliveTimeout = 5_000;
  // Hub clients (httpx) drop idle connections after 5 s: a server closing at the same moment
  // resets a request already on its way. Outlive them; stop() closes idle connections anyway.
  if (mirror) server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((e: NodeJS.ErrnoException) => {
    void watcher?.close();
    void imports?.close();
    throw new StorageError(`cannot listen on ${config.listen.host}:${config.listen.port}: ${e.code ?? e.message}`, 'ESF_LISTEN', { cause: e });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;

  await p2p?.start();
  reconciler.start();
  scheduleGc(Math.min(60_000, config.gc.intervalMs));
  log.info({ url, store: config.store, models: reconciler.list().map((m) => m.ref), maxRate: config.maxRate }, 'daemon started');

  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      stopping = true;
      log.info('stopping: no new work, aborting pulls in flight');
      if (gcTimer) clearTimeout(gcTimer);
      await watcher?.close();
      await imports?.close();
      // Ends held peer long-polls before the server closes.
      await p2p?.stop();
      const closing = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      await reconciler.stop(7_000);
      await mirror?.stop();
      await gcRunning;
      // SSE followers and stragglers: the pulls they watched are gone anyway.
      server.closeAllConnections();
      await closing;
      log.info('stopped');
    })());

  return { config, url, reconciler, router, metrics, limiter, store, logger: root, collectGarbage, stop };
}

function parseKey(key: string): { hub: 'hf' | 'ms'; org: string; name: string } | undefined {
  const m = /^(hf|ms):\/\/([^/]+)\/([^@]+)@/.exec(key);
  return m ? { hub: m[1] as 'hf' | 'ms', org: m[2]!, name: m[3]! } : undefined;
}
