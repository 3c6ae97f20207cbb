/**
 * Requests per client of the node API: one token bucket per client address, holding a minute's
 * worth of requests and refilled at the configured rate. Pure: the clock is injected.
 *
 * A client is its IPv4 address, or the /64 prefix of its IPv6 address (one host usually holds a
 * whole /64, and could otherwise rotate through it). The buckets are bounded: past `maxClients`
 * the least recently seen client is forgotten, which at worst hands it a fresh bucket.
 */
import { isIPv6 } from 'node:net';

export interface ClientLimitOptions {
  /** Requests a client may make per minute (also the burst); 0 = no limit. */
  perMinute: number;
  maxClients?: number;
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class ClientLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly perMs: number;
  private readonly maxClients: number;
  private readonly now: () => number;

  constructor(private readonly opts: ClientLimitOptions) {
    this.perMs = opts.perMinute / 60_000;
    this.maxClients = opts.maxClients ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  /** Take one request for `address`: 0 when allowed, else the milliseconds until it would be. */
  take(address: string | undefined): number {
    if (this.opts.perMinute <= 0) return 0;
    const key = clientKey(address);
    const now = this.now();
    let b = this.buckets.get(key);
    if (b) {
      b.tokens = Math.min(this.opts.perMinute, b.tokens + (now - b.at) * this.perMs);
      b.at = now;
      // Most recently seen last: the first entry is the one to forget.
      this.buckets.delete(key);
    } else {
      b = { tokens: this.opts.perMinute, at: now };
      if (this.buckets.size >= this.maxClients) this.buckets.delete(this.buckets.keys().next().value!);
    }
    this.buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - b.tokens) / this.perMs);
  }

  /** Clients with a bucket now (bounded by maxClients). */
  get size(): number {
    return this.buckets.size;
  }
}

/** The key a client is counted under: its IPv4 address (also when IPv4-mapped), or its IPv6 /64. */
export function clientKey(address: string | undefined): string {
  if (!address) return '?';
  const a = address.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  if (mapped) return mapped[1]!;
  if (!isIPv6(a)) return a;
  const [head, tail] = a.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}
