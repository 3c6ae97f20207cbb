/**
 * Peer-to-peer sharing between node daemons: discovery, the peer API, and the chunk source the
 * transfer engine consults before the origin. `createP2PNode` composes them; the daemon mounts
 * `node.registerRoutes(router)` and passes `node.engineHooks()` into every fetch.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { ServerTrust } from '../http/tls.js';
import { processBackoff, type EngineHooks, type OriginBackoff } from '../transfer/index.js';
import { PeerClient } from './client.js';
import { P2PCounters } from './counters.js';
import { PeerDiscovery, type DnsResolver } from './discovery.js';
import { LocalInventory, type BlobStore } from './inventory.js';
import { registerPeerRoutes, type PeerServer, type RouteRegistrar } from './server.js';
import { PeerChunkSource, type PeerChunkSourceOptions } from './source.js';
import { PeerToken } from './token.js';

export { PeerToken } from './token.js';
export { MAX_PEER_INFO_BYTES, MAX_PEER_STATUS_BYTES, PeerClient, PeerProtocolError, type BlobStatus, type DataResult } from './client.js';
export { P2PCounters, type P2PCounterValues } from './counters.js';
export { PeerDiscovery, normalizeBaseUrl, type DiscoveryOptions, type DnsResolver, type Peer } from './discovery.js';
export { LocalInventory, type BlobStore, type LocalHolding } from './inventory.js';
export { registerPeerRoutes, PEER_PROTOCOL, type PeerServer, type PeerServerDeps, type RouteRegistrar } from './server.js';
export { PeerChunkSource, type PeerChunkSourceOptions } from './source.js';
export { BlameLedger, type Verdict } from './blame.js';
export { ownerOf } from './rendezvous.js';

export interface P2PNodeOptions {
  /** The content store (`Store` fits): finished blobs are served from `blobPath(sha256)`. */
  store: BlobStore;
  /** The engine's node-local state dir: durable chunks of downloads in progress are read from it. */
  stateDir: string;
  token: PeerToken;
  /** Default: random per start (a restarted daemon is a new member). */
  nodeId?: string;
  static?: string[];
  dns?: string;
  port?: number;
  /** How discovered addresses are reached: https when the daemons serve TLS. */
  scheme?: 'http' | 'https';
  /** How peers' certificates are checked (peers.caFile, peers.serverName). */
  trust?: ServerTrust;
  dnsServers?: string[];
  resolver?: DnsResolver;
  discoveryIntervalMs?: number;
  quarantineMs?: number;
  uploadMaxRate?: number;
  uploadConcurrency?: number;
  /** Pauses per origin that the engine and the peers' notices share (default: the process's). */
  originBackoff?: OriginBackoff;
  /** Chunk-source tuning (waits, gather, small blobs). */
  tuning?: Pick<PeerChunkSourceOptions, 'maxWaitMs' | 'pollMs' | 'statusTtlMs' | 'gatherMs' | 'smallBlobBytes' | 'fanout'>;
  logger?: Logger;
}

export interface P2PNode {
  readonly nodeId: string;
  readonly counters: P2PCounters;
  readonly inventory: LocalInventory;
  readonly discovery: PeerDiscovery;
  readonly client: PeerClient;
  readonly source: PeerChunkSource;
  readonly originBackoff: OriginBackoff;
  /** Mount `/v1/peer/...` on the daemon's router. */
  registerRoutes(router: RouteRegistrar): PeerServer;
  /**
   * Options to spread into `fetchBlobs` (EngineOptions). `chain` receives the same events, so the
   * caller keeps its own progress handling.
   */
  engineHooks(chain?: Pick<EngineHooks, 'onEvent' | 'onChunk'>): Required<EngineHooks>;
  /** First discovery round, then periodic. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function createP2PNode(o: P2PNodeOptions): P2PNode {
  const nodeId = o.nodeId ?? randomBytes(8).toString('hex');
  const counters = new P2PCounters();
  const inventory = new LocalInventory({ store: o.store, stateDir: o.stateDir });
  const client = new PeerClient({ token: o.token, nodeId, ...(o.trust ? { trust: o.trust } : {}) });
  const discovery = new PeerDiscovery({
    selfId: nodeId,
    client,
    ...(o.static ? { static: o.static } : {}),
    ...(o.dns ? { dns: o.dns } : {}),
    ...(o.port !== undefined ? { port: o.port } : {}),
    ...(o.scheme ? { scheme: o.scheme } : {}),
    ...(o.dnsServers ? { dnsServers: o.dnsServers } : {}),
    ...(o.resolver ? { resolver: o.resolver } : {}),
    ...(o.discoveryIntervalMs !== undefined ? { intervalMs: o.discoveryIntervalMs } : {}),
    ...(o.quarantineMs !== undefined ? { quarantineMs: o.quarantineMs } : {}),
    ...(o.logger ? { logger: o.logger } : {}),
  });
  const source = new PeerChunkSource({ nodeId, discovery, client, inventory, counters, ...o.tuning, ...(o.logger ? { logger: o.logger } : {}) });
  const servers: PeerServer[] = [];
  const originBackoff = o.originBackoff ?? processBackoff;
  const stopSharing = shareBackoff(originBackoff, discovery, client, o.logger);
  return {
    nodeId,
    counters,
    inventory,
    discovery,
    client,
    source,
    originBackoff,
    registerRoutes(router) {
      const s = registerPeerRoutes(router, {
        originBackoff,
        nodeId,
        token: o.token,
        inventory,
        counters,
        ...(o.uploadMaxRate !== undefined ? { uploadMaxRate: o.uploadMaxRate } : {}),
        ...(o.uploadConcurrency !== undefined ? { uploadConcurrency: o.uploadConcurrency } : {}),
        ...(o.logger ? { logger: o.logger } : {}),
      });
      servers.push(s);
      return s;
    },
    engineHooks(chain = {}) {
      return {
        originBackoff,
        chunkSources: [source],
        onEvent: (e) => {
          source.onEvent(e);
          chain.onEvent?.(e);
        },
        onChunk: (e) => {
          source.onChunk(e);
          chain.onChunk?.(e);
        },
      };
    },
    start: () => discovery.start(),
    async stop() {
      stopSharing();
      discovery.stop();
      for (const s of servers) s.close();
      await client.close();
    },
  };
}

/**
 * Pass on a pause an origin asked of this node (not one a peer told us: no echoes) to every live
 * peer, at most once a second per origin. Best effort: a peer that misses it learns on its own.
 */
function shareBackoff(backoff: OriginBackoff, discovery: PeerDiscovery, client: PeerClient, logger: Logger | undefined): () => void {
  const lastSent = new Map<string, number>();
  return backoff.onNote((origin, untilMs, from) => {
    if (from !== 'origin') return;
    const now = Date.now();
    if (now - (lastSent.get(origin) ?? 0) < 1_000) return;
    lastSent.set(origin, now);
    const waitMs = untilMs - now;
    logger?.warn({ origin, waitMs }, 'origin asked for a pause; telling the peers');
    for (const p of discovery.live()) void client.backoff(p.url, origin, waitMs).catch(() => undefined);
  });
}
