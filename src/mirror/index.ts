/**
 * The hub mirror: the daemon serves the Hugging Face protocol under `/hf` and ModelScope's under
 * `/ms` on its own listener, so unmodified clients (huggingface_hub, transformers, vLLM,
 * modelscope, ms-swift) download through the node's store with `HF_ENDPOINT=http://HOST:PORT/hf`
 * and `MODELSCOPE_ENDPOINT=http://HOST:PORT/ms`. `GET /v1/mirror` tells a client both URLs.
 * A miss is pulled through the transfer engine (peers, leases, verification) while the client
 * reads. See docs/mirror.md.
 */
import { setMaxListeners } from 'node:events';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Store } from '../store/store.js';
import type { RateLimiter } from '../transfer/index.js';
import { allowMatcher } from './allow.js';
import { Catalog } from './catalog.js';
import { registerHf } from './hf.js';
import { MirrorMetrics } from './metrics.js';
import { registerMs } from './ms.js';
import { BlobProgress } from './progress.js';
import { Publisher } from './publish.js';
import { baseUrl, sendJson, type MirrorContext, type Registrar } from './serve.js';
import { BlobSupply, type EngineTap, type SupplyDeps } from './supply.js';
import { Upstream } from './upstream.js';

export { allowMatcher, normalizeAllowGlob } from './allow.js';
export type { EngineTap } from './supply.js';

export interface MirrorOptions {
  store: Store;
  /** Node-local: the engine's resume state, and the mirror's memory of public repos and refs. */
  stateDir: string;
  /** ModelHub endpoints (HF_ENDPOINT, MODELSCOPE_ENDPOINT) and proxies; tokens in it are never used. */
  env: NodeJS.ProcessEnv;
  /** Repo globs (`hf://Qwen/*`); undefined: every repo. */
  allow?: string[];
  registry: Registry;
  logger: Logger;
  /** Wrap the mirror's engine tap into the daemon's hooks (P2P chunk sources). */
  engineHooks?: SupplyDeps['engineHooks'];
  limiter?: RateLimiter;
  connections?: number;
  chunkSize?: number;
  fsync?: boolean;
  holder?: string;
  leaseTtlMs?: number;
  /** How long a hub's answer about a client's access is reused (default 60 s). */
  accessTtlMs?: number;
  /** HF tree page size (default 1000, the ModelHub's). */
  treePageSize?: number;
  /** Bytes the mirror's fetches received, by source (the daemon's `swift_fetch_bytes_received_total`). */
  onBytes?: SupplyDeps['onBytes'];
  /** How often repos in the store are classified public or not, for serving while the hub is down (default 10 min). */
  classifyEveryMs?: number;
}

export interface Mirror {
  /** Engine hooks to chain into every other fetch of the daemon, so clients can follow those too. */
  readonly tap: EngineTap;
  readonly metrics: MirrorMetrics;
  /** Mount `/hf/...`, `/ms/...` and `GET /v1/mirror`. */
  register(router: Registrar): void;
  /** Stop fetching (partial downloads resume next time) and save what was learnt. */
  stop(): Promise<void>;
}

export async function createMirror(o: MirrorOptions): Promise<Mirror> {
  const logger = o.logger.child({ module: 'mirror' });
  const shutdown = new AbortController();
  // Every waiting client and running fetch listens here; hundreds at once are normal, not a leak.
  setMaxListeners(0, shutdown.signal);
  const holder = o.holder ?? `mirror:${hostname()}:${process.pid}`;
  const upstream = new Upstream(o.env);
  const catalog = new Catalog({ upstream, store: o.store, stateDir: o.stateDir, logger, ttlMs: o.accessTtlMs ?? 60_000 });
  await catalog.load();
  const progress = new BlobProgress(o.stateDir);
  const publisher = new Publisher({ store: o.store, catalog, holder, logger, signal: shutdown.signal, ...(o.leaseTtlMs ? { leaseTtlMs: o.leaseTtlMs } : {}) });
  const supply = new BlobSupply({
    store: o.store,
    stateDir: o.stateDir,
    progress,
    engineHooks: o.engineHooks ?? ((tap) => tap),
    connections: o.connections ?? 24,
    fsync: o.fsync ?? true,
    env: o.env,
    holder,
    signal: shutdown.signal,
    logger,
    onSettled: (key) => publisher.settled(key),
    ...(o.onBytes ? { onBytes: o.onBytes } : {}),
    ...(o.limiter ? { limiter: o.limiter } : {}),
    ...(o.chunkSize ? { chunkSize: o.chunkSize } : {}),
    ...(o.leaseTtlMs ? { leaseTtlMs: o.leaseTtlMs } : {}),
  });
  const metrics = new MirrorMetrics(o.registry);
  const ctx: MirrorContext = {
    catalog, upstream, supply, progress, publisher, metrics,
    allowed: allowMatcher(o.allow),
    signal: shutdown.signal,
    logger,
    treePageSize: o.treePageSize ?? 1000,
  };
  const classify = () => void catalog.classifyStored(shutdown.signal).catch((e: Error) => logger.debug({ err: e.message }, 'classifying stored repos failed'));
  const classifier = setInterval(classify, o.classifyEveryMs ?? 10 * 60_000);
  classifier.unref();
  setTimeout(classify, 1000).unref();
  return {
    tap: progress.tap,
    metrics,
    register(router) {
      router.add('GET', '/v1/mirror', ({ req, res }) => {
        const base = baseUrl(req);
        sendJson(res, 200, { hfEndpoint: `${base}/hf`, modelscopeEndpoint: `${base}/ms` }, { 'cache-control': 'no-store' });
      });
      registerHf(router, ctx);
      registerMs(router, ctx);
    },
    async stop() {
      clearInterval(classifier);
      shutdown.abort(new Error('mirror stopping'));
      await supply.drain();
      await publisher.drain();
      await catalog.flush();
      await upstream.close();
    },
  };
}
