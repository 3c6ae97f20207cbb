/**
 * A small swarm node for tests and the benchmark: a real HTTP server (the daemon's Router) with
 * the peer routes, its own store and state dir, and the real transfer engine fed by the peer
 * chunk source. Nodes start listening first (port 0) and join the swarm once every URL is known.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { sha256Key } from '../../src/core/blob-key.js';
import type { BlobRequest, FetchedBlob, TransferEvent } from '../../src/core/transfer.js';
import { Router } from '../../src/daemon/router.js';
import { createP2PNode, PeerToken, type DnsResolver, type P2PNode, type P2PNodeOptions } from '../../src/p2p/index.js';
import { Store } from '../../src/store/store.js';
import { fetchBlobs, OriginBackoff, RateLimiter } from '../../src/transfer/index.js';

export interface NodeOptions {
  token: string;
  connections?: number;
  chunkSize?: number;
  uploadConcurrency?: number;
  uploadMaxRate?: number;
  /** Download cap of this node (its "link"), origin and peers together. */
  maxRate?: number;
  tuning?: P2PNodeOptions['tuning'];
  host?: string;
  port?: number;
  /** Use this directory (store and state) instead of a fresh one: a daemon restarted on the same disk. */
  dir?: string;
  /** More addresses to listen on with the same port: a dual-stack pod reached over IPv4 and IPv6. */
  alsoListen?: string[];
  stallTimeoutMs?: number;
  /** Transform data bodies this node serves (a poisoned peer). */
  poison?: (chunk: Buffer, offset: number) => Buffer;
  /** Data bodies this node serves stop after this many bytes, the connection left open (a stalled peer). */
  stallAfterBytes?: number;
}

export interface JoinOptions {
  static?: string[];
  dns?: string;
  port?: number;
  dnsServers?: string[];
  resolver?: DnsResolver;
  discoveryIntervalMs?: number;
  /** The node id this node reports (default: random per join, as in the daemon). */
  nodeId?: string;
}

export interface SeenRequest {
  method: string;
  url: string;
  authorization: string | undefined;
  headers: IncomingMessage['headers'];
}

export class SwarmNode {
  p2p: P2PNode | undefined;
  readonly seen: SeenRequest[] = [];
  readonly events: TransferEvent[] = [];
  private readonly router = new Router();
  private constructor(
    readonly dir: string,
    readonly store: Store,
    readonly server: Server,
    readonly extraServers: Server[],
    readonly url: string,
    readonly port: number,
    readonly opts: NodeOptions,
  ) {}

  get stateDir(): string {
    return join(this.dir, 'state');
  }

  static async start(opts: NodeOptions): Promise<SwarmNode> {
    const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'sf-p2p-node-')));
    const store = new Store(join(dir, 'store'));
    await store.init();
    let node!: SwarmNode;
    const server = createServer((req, res) => {
      node.seen.push({ method: req.method ?? 'GET', url: req.url ?? '/', authorization: req.headers.authorization, headers: req.headers });
      if (!node.p2p) {
        res.writeHead(503).end();
        return;
      }
      if (opts.poison && /\/data(\?|$)/.test(req.url ?? '')) poisonResponse(res, opts.poison, req.headers.range);
      if (opts.stallAfterBytes !== undefined && /\/data(\?|$)/.test(req.url ?? '')) stallResponse(res, opts.stallAfterBytes);
      void node.router.handle(req, res);
    });
    server.keepAliveTimeout = 5_000;
    const host = opts.host ?? '127.0.0.1';
    await listen(server, opts.port ?? 0, host);
    const port = (server.address() as AddressInfo).port;
    // The same handler behind every address, as one process listening on `::` would be.
    const extra = (opts.alsoListen ?? []).map(() => createServer((req, res) => server.emit('request', req, res)));
    for (const [i, s] of extra.entries()) await listen(s, port, opts.alsoListen![i]!);
    node = new SwarmNode(dir, store, server, extra, urlOf(host, port), port, opts);
    return node;
  }

  async join(j: JoinOptions): Promise<void> {
    const o: P2PNodeOptions = {
      store: this.store,
      stateDir: this.stateDir,
      token: PeerToken.fromValue(this.opts.token),
      // Each node its own, as in separate processes: what one learns, the others hear from it.
      originBackoff: new OriginBackoff(),
      discoveryIntervalMs: j.discoveryIntervalMs ?? 1_000,
      ...(j.nodeId ? { nodeId: j.nodeId } : {}),
      ...(j.static ? { static: j.static } : {}),
      ...(j.dns ? { dns: j.dns } : {}),
      ...(j.port !== undefined ? { port: j.port } : {}),
      ...(j.dnsServers ? { dnsServers: j.dnsServers } : {}),
      ...(j.resolver ? { resolver: j.resolver } : {}),
      ...(this.opts.uploadConcurrency !== undefined ? { uploadConcurrency: this.opts.uploadConcurrency } : {}),
      ...(this.opts.uploadMaxRate !== undefined ? { uploadMaxRate: this.opts.uploadMaxRate } : {}),
      ...(this.opts.tuning ? { tuning: this.opts.tuning } : {}),
    };
    const p2p = createP2PNode(o);
    p2p.registerRoutes(this.router);
    await p2p.start();
    this.p2p = p2p;
  }

  /** Fetch with the swarm, then move the verified blobs into this node's store. */
  async pull(requests: BlobRequest[], signal?: AbortSignal): Promise<FetchedBlob[]> {
    const hooks = this.p2p!.engineHooks({ onEvent: (e) => this.events.push(e) });
    const fetched = await fetchBlobs(requests, {
      partialDir: this.store.partialDir,
      stateDir: this.stateDir,
      connections: this.opts.connections ?? 4,
      ...(this.opts.chunkSize ? { chunkSize: this.opts.chunkSize } : {}),
      ...(this.opts.maxRate ? { limiter: new RateLimiter(this.opts.maxRate) } : {}),
      stallTimeoutMs: this.opts.stallTimeoutMs ?? 30_000,
      retryBaseMs: 50,
      retryMaxMs: 500,
      hashWorkers: 1,
      ...(signal ? { signal } : {}),
      ...hooks,
    });
    for (const b of fetched) await this.store.commitBlob(b.path, b.sha256);
    return fetched;
  }

  bytesFromPeers(): number {
    return this.p2p?.counters.bytesFromPeers ?? 0;
  }

  /** Stop serving and forget everything (a node going away). */
  async close(keepFiles = false): Promise<void> {
    await this.p2p?.stop();
    for (const s of [this.server, ...this.extraServers]) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
    if (!keepFiles) await rm(this.dir, { recursive: true, force: true });
  }
}

/** `http://[::1]:7070` for an IPv6 address. */
export function urlOf(host: string, port: number): string {
  return host.includes(':') ? `http://[${host}]:${port}` : `http://${host}:${port}`;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Flip bytes in what this node serves: the node is honest about what it has, but not about the content. */
function poisonResponse(res: import('node:http').ServerResponse, poison: (c: Buffer, offset: number) => Buffer, range: string | undefined): void {
  const m = range ? /^bytes=(\d+)-/.exec(range) : null;
  let offset = m ? Number(m[1]) : 0;
  const write = res.write.bind(res) as (chunk: unknown, ...rest: unknown[]) => boolean;
  res.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (res.statusCode === 206 || res.statusCode === 200) {
      const b = Buffer.from(chunk as Buffer);
      const out = poison(b, offset);
      offset += b.length;
      return write(out, ...rest);
    }
    return write(chunk, ...rest);
  }) as typeof res.write;
}

/** SHA-256 of a file's bytes (what a node stored, checked against what the hub vouched for). */
export const sha256File = async (p: string): Promise<string> => createHash('sha256').update(await readFile(p)).digest('hex');

export function blobRequestFor(hubEndpoint: string, repo: string, commit: string, f: { path: string; size: number; sha256: string }, hubHeaders: Record<string, string> = {}): BlobRequest {
  return {
    key: sha256Key(f.sha256),
    label: f.path,
    size: f.size,
    sha256: f.sha256,
    origin: { url: `${hubEndpoint}/${repo}/resolve/${commit}/${f.path}`, hubHeaders },
  };
}

export async function startSwarm(n: number, opts: NodeOptions, join: (nodes: SwarmNode[]) => JoinOptions = (nodes) => ({ static: nodes.map((x) => x.url) })): Promise<SwarmNode[]> {
  const nodes = await Promise.all(Array.from({ length: n }, () => SwarmNode.start(opts)));
  const j = join(nodes);
  await Promise.all(nodes.map((x) => x.join(j)));
  // The first round raced the other nodes' joins: look again now that every node answers.
  await Promise.all(nodes.map((x) => x.p2p!.discovery.refresh()));
  return nodes;
}

/** Let `limit` body bytes through, then swallow every write and the end: the peer goes silent, the socket stays open. */
function stallResponse(res: import('node:http').ServerResponse, limit: number): void {
  let sent = 0;
  const write = res.write.bind(res) as (chunk: unknown, ...rest: unknown[]) => boolean;
  res.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (res.statusCode !== 206 && res.statusCode !== 200) return write(chunk, ...rest);
    const b = Buffer.from(chunk as Buffer);
    const pass = Math.max(0, Math.min(b.length, limit - sent));
    sent += b.length;
    if (pass > 0) write(b.subarray(0, pass));
    return true;
  }) as typeof res.write;
  const end = res.end.bind(res) as (...a: unknown[]) => unknown;
  res.end = ((...a: unknown[]) => {
    if (res.statusCode !== 206 && res.statusCode !== 200) return end(...a);
    return res;
  }) as typeof res.end;
}
