/** The per-client request budget on a fake clock: refill, keys per client, the bound on clients. */
import { describe, expect, it } from 'vitest';
import { ClientLimiter, clientKey } from '../../src/daemon/client-limit.js';

describe('ClientLimiter', () => {
  it('gives each client a minute\'s worth at once, then one request per 60/perMinute seconds', () => {
    let now = 1_000_000;
    const l = new ClientLimiter({ perMinute: 6, now: () => now });
    for (let i = 0; i < 6; i++) expect(l.take('10.0.0.1')).toBe(0);
    expect(l.take('10.0.0.1')).toBe(10_000);
    // Another client has its own budget.
    expect(l.take('10.0.0.2')).toBe(0);
    now += 4_000;
    expect(l.take('10.0.0.1')).toBe(6_000);
    now += 6_000;
    expect(l.take('10.0.0.1')).toBe(0);
    expect(l.take('10.0.0.1')).toBe(10_000);
    // An idle client earns no more than one minute's worth.
    now += 3_600_000;
    for (let i = 0; i < 6; i++) expect(l.take('10.0.0.1')).toBe(0);
    expect(l.take('10.0.0.1')).toBeGreaterThan(0);
  });

  it('counts an IPv6 client by its /64 and an IPv4-mapped one as IPv4; 0 per minute is no limit', () => {
    expect(clientKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(clientKey('2001:db8:1:2:ffff:ffff:ffff:fffe')).toBe('2001:db8:1:2::/64');
    expect(clientKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(clientKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(clientKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(clientKey('192.0.2.7')).toBe('192.0.2.7');
    const now = 0;
    const l = new ClientLimiter({ perMinute: 1, now: () => now });
    expect(l.take('2001:db8:1:2::a')).toBe(0);
    expect(l.take('2001:db8:1:2::b')).toBeGreaterThan(0);
    const free = new ClientLimiter({ perMinute: 0 });
    for (let i = 0; i < 1000; i++) expect(free.take('10.0.0.1')).toBe(0);
    expect(free.size).toBe(0);
  });

  it('keeps at most maxClients buckets, forgetting the least recently seen', () => {
    const now = 0;
    const l = new ClientLimiter({ perMinute: 1, maxClients: 3, now: () => now });
    for (const a of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) expect(l.take(a)).toBe(0);
    expect(l.take('10.0.0.1')).toBeGreaterThan(0); // seen again: now the most recent
    expect(l.take('10.0.0.4')).toBe(0); // forgets 10.0.0.2, the least recently seen
    expect(l.size).toBe(3);
    expect(l.take('10.0.0.2')).toBe(0); // a fresh bucket (forgets 10.0.0.3)
    expect(l.take('10.0.0.1')).toBeGreaterThan(0); // still remembered
  });
});
