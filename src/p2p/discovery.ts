/**
 * Who the peers are: a static list of base URLs and/or the A and AAAA records of a Kubernetes headless
 * Service, re-resolved periodically. Every candidate is asked for its node id (`/v1/peer/info`),
 * which is how a node recognises itself behind its own Service address and how one node reached by
 * two addresses counts once. Liveness comes from those probes and from failures the chunk source
 * reports; quarantine (bad data) overrides liveness until it expires.
 *
 * Quarantine is keyed by the peer's address, never by the node id it reports: the id is whatever
 * the peer says, so a liar quarantined as `evil-1` could come back as `evil-3` and be used again
 * (issue 12, item 8). Every peer holds the same shared token, so the token names no one; the
 * address is what a peer cannot choose (it is our candidate list: the static list or the Service's
 * endpoints). For the same reason an id that a live, unquarantined address already answers with is
 * not handed to a second address: a liar cannot take over an honest node's identity.
 */
import { promises as dns } from 'node:dns';
import type { Logger } from 'pino';
import type { PeerClient } from './client.js';

export interface Peer {
  id: string;
  url: string;
  alive: boolean;
  /** Date.now() of the last successful contact. */
  lastSeen: number;
  failures: number;
}

/** `dns.Resolver` fits. Without `resolve6` only A records are asked. */
export interface DnsResolver {
  resolve4(host: string): Promise<string[]>;
  resolve6?(host: string): Promise<string[]>;
}

export interface DiscoveryOptions {
  selfId: string;
  client: PeerClient;
  /** Base URLs (`http://10.0.0.5:7070`; a bare `host:port` means http). */
  static?: string[];
  /** Headless Service name whose A and AAAA records are the peers (IPv4, IPv6 and dual-stack Services). */
  dns?: string;
  /** Port the peers listen on (with `dns`). */
  port?: number;
  /** Scheme of the addresses `dns` gives (https when the daemons serve TLS; default http). */
  scheme?: 'http' | 'https';
  /** DNS servers (`127.0.0.1:5353`) to ask instead of the system resolver. */
  dnsServers?: string[];
  /** Or any resolver (tests). Default: the system's getaddrinfo, which applies the search domains. */
  resolver?: DnsResolver;
  /** Re-resolve and re-probe this often (default 10 s). */
  intervalMs?: number;
  /** How long a quarantine lasts (default 1 h). */
  quarantineMs?: number;
  logger?: Logger;
}

export function normalizeBaseUrl(u: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(u) ? u : `http://${u}`;
  const url = new URL(withScheme);
  return `${url.protocol}//${url.host}`;
}

function ipUrl(ip: string, port: number, scheme = 'http'): string {
  return ip.includes(':') ? `${scheme}://[${ip}]:${port}` : `${scheme}://${ip}:${port}`;
}

export class PeerDiscovery {
  private readonly peers = new Map<string, Peer>();
  private readonly selfUrls = new Set<string>();
  /** By base URL (see the opening comment). */
  private readonly quarantined = new Map<string, { until: number; reason: string; id: string | undefined }>();
  private readonly strikes = new Map<string, number>();
  private readonly resolver: DnsResolver | undefined;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private readonly reprobes = new Map<string, NodeJS.Timeout>();
  private stopped = false;
  private readonly log: Logger | undefined;

  constructor(private readonly opts: DiscoveryOptions) {
    this.log = opts.logger?.child({ module: 'p2p-discovery' });
    if (opts.resolver) this.resolver = opts.resolver;
    else if (opts.dnsServers && opts.dnsServers.length > 0) {
      const r = new dns.Resolver({ timeout: 2_000, tries: 2 });
      r.setServers(opts.dnsServers);
      this.resolver = r;
    }
  }

  /** First discovery round (awaited), then one every `intervalMs` (sooner while candidates are silent). */
  async start(): Promise<void> {
    await this.refresh();
    this.schedule();
  }

  private unanswered = 0;
  private quickRounds = 0;

  private schedule(): void {
    if (this.stopped) return;
    const every = this.opts.intervalMs ?? 10_000;
    // A candidate that does not answer yet is usually a daemon still starting (DaemonSets roll out
    // node by node, and a cold start races): look again soon, backing off to the normal interval,
    // so a node that came up first does not fetch alone for a whole interval.
    let delay = every;
    if (this.unanswered > 0) delay = Math.min(every, 250 * 2 ** this.quickRounds++);
    else this.quickRounds = 0;
    this.timer = setTimeout(() => void this.refresh().finally(() => this.schedule()), delay);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    for (const t of this.reprobes.values()) clearTimeout(t);
    this.reprobes.clear();
  }

  /** Live, unquarantined peers (never this node). */
  live(): Peer[] {
    return [...this.peers.values()].filter((p) => p.alive && !this.isQuarantined(p.url));
  }

  all(): Peer[] {
    return [...this.peers.values()];
  }

  get(id: string): Peer | undefined {
    return this.peers.get(id);
  }

  /** The peer known at a base URL (whatever id it answers with now). */
  at(url: string): Peer | undefined {
    for (const p of this.peers.values()) if (p.url === url) return p;
    return undefined;
  }

  /** Whether the address `url` (a peer's base URL) is quarantined. */
  isQuarantined(url: string): boolean {
    const q = this.quarantined.get(url);
    if (!q) return false;
    if (Date.now() > q.until) {
      this.quarantined.delete(url);
      return false;
    }
    return true;
  }

  quarantinedPeers(): Array<{ url: string; id: string | undefined; until: number; reason: string }> {
    return [...this.quarantined.entries()].filter(([url]) => this.isQuarantined(url)).map(([url, q]) => ({ url, ...q }));
  }

  /**
   * Stop using the peer at `url`, whatever id it answers with from now on. `severe` lasts
   * `quarantineMs`; `mild` (bad bytes that may have been relayed in good faith) starts at a minute
   * and grows fourfold with each repeat up to the same cap.
   */
  quarantine(url: string, reason: string, kind: 'severe' | 'mild' = 'severe'): void {
    const full = this.opts.quarantineMs ?? 3_600_000;
    const strikes = (this.strikes.get(url) ?? 0) + 1;
    this.strikes.set(url, strikes);
    const ms = kind === 'severe' ? full : Math.min(full, 60_000 * 4 ** (strikes - 1));
    const id = this.at(url)?.id;
    this.quarantined.set(url, { until: Date.now() + ms, reason, id });
    this.log?.warn({ peer: id, url, reason, ms }, 'peer quarantined');
  }

  /** A request to this peer failed: stop using it now, look again shortly. */
  markFailed(id: string): void {
    const p = this.peers.get(id);
    if (!p) return;
    p.failures++;
    if (p.alive) this.log?.info({ peer: id, url: p.url }, 'peer unreachable');
    p.alive = false;
    if (this.stopped || this.reprobes.has(id)) return;
    const t = setTimeout(
      () => {
        this.reprobes.delete(id);
        void this.probe(p.url).catch(() => undefined);
      },
      Math.min(1_000 * 2 ** Math.min(p.failures - 1, 4), 10_000),
    );
    t.unref();
    this.reprobes.set(id, t);
  }

  /** Resolve the candidates and probe each; concurrent callers share one round. */
  refresh(): Promise<void> {
    this.refreshing ??= this.doRefresh().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async candidates(): Promise<Set<string>> {
    const out = new Set<string>();
    for (const u of this.opts.static ?? []) {
      try {
        out.add(normalizeBaseUrl(u));
      } catch {
        this.log?.warn({ url: u }, 'ignoring a malformed peers.static entry');
      }
    }
    if (this.opts.dns) {
      const port = this.opts.port ?? 7070;
      try {
        for (const ip of await this.addresses(this.opts.dns)) out.add(ipUrl(ip, port, this.opts.scheme));
      } catch (e) {
        // No endpoints yet (the Service has no ready pods) is normal at rollout.
        this.log?.debug({ dns: this.opts.dns, err: (e as NodeJS.ErrnoException).code ?? (e as Error).message }, 'peer DNS lookup failed');
        // Keep the peers we know: a DNS hiccup must not drop a working swarm.
        for (const p of this.peers.values()) out.add(p.url);
      }
    }
    return out;
  }

  /**
   * The Service's addresses, IPv4 and IPv6: a single-stack IPv6 cluster has only AAAA records, and
   * a dual-stack Service has both for every pod (the same node at two addresses is counted once by
   * its id, see probe). A family with no records is normal; both failing is a failed lookup.
   */
  private async addresses(name: string): Promise<string[]> {
    if (!this.resolver) return (await dns.lookup(name, { all: true, family: 0 })).map((a) => a.address);
    const r = this.resolver;
    const answers = await Promise.allSettled([r.resolve4(name), r.resolve6 ? r.resolve6(name) : Promise.resolve([])]);
    const ips = answers.flatMap((a) => (a.status === 'fulfilled' ? a.value : []));
    const failed = answers.find((a): a is PromiseRejectedResult => a.status === 'rejected');
    if (ips.length === 0 && failed) throw failed.reason;
    return ips;
  }

  private async doRefresh(): Promise<void> {
    const urls = await this.candidates();
    // Forget peers whose address is no longer a candidate (scaled down, rescheduled).
    for (const [id, p] of this.peers) if (!urls.has(p.url)) this.peers.delete(id);
    const answers = await Promise.all([...urls].filter((u) => !this.selfUrls.has(u)).map((u) => this.probe(u).catch(() => false)));
    this.unanswered = answers.filter((ok) => !ok).length;
  }

  /** Ask a candidate who it is; false when it did not answer. */
  private async probe(url: string): Promise<boolean> {
    let id: string;
    try {
      id = (await this.opts.client.info(url)).nodeId;
    } catch (e) {
      for (const p of this.peers.values()) {
        if (p.url === url) {
          if (p.alive) this.log?.info({ peer: p.id, url, err: (e as Error).message }, 'peer unreachable');
          p.alive = false;
        }
      }
      return false;
    }
    if (id === this.opts.selfId) {
      this.selfUrls.add(url);
      return true;
    }
    // An address now answered by a different node (pod replaced): drop the old identity. A
    // quarantined address stays quarantined under its new name (live() filters by address).
    for (const [oldId, p] of this.peers) if (p.url === url && oldId !== id) this.peers.delete(oldId);
    const known = this.peers.get(id);
    if (known && known.url !== url && known.alive && !this.isQuarantined(known.url)) {
      // The same node reached at a second address, or another node claiming its id: either way the
      // first, working address keeps it.
      this.log?.debug({ peer: id, url, first: known.url }, 'a second address answers with a known node id; keeping the first');
      return true;
    }
    if (known) {
      if (!known.alive) this.log?.info({ peer: id, url }, 'peer back');
      known.url = url;
      known.alive = true;
      known.lastSeen = Date.now();
      known.failures = 0;
      return true;
    }
    this.peers.set(id, { id, url, alive: true, lastSeen: Date.now(), failures: 0 });
    this.log?.info({ peer: id, url }, 'peer found');
    return true;
  }
}
