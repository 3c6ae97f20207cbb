/**
 * Claims: leases that live on their group's heartbeat (store/lease.ts). Real files, real child
 * processes (SIGKILL, SIGSTOP), no fake clocks.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isLeaseLive, listLeases, readLease, tryAcquireLease } from '../../src/store/lease.js';
import { spawnNode, tempDir, until, type Child } from '../daemon/helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
const children: Child[] = [];

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('sf-claims-'));
});
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.proc.exitCode === null && c.proc.signalCode === null) {
      c.proc.kill('SIGCONT');
      c.proc.kill('SIGKILL');
    }
    await c.exited;
  }
  await cleanup();
});

function holder(ttlMs: number, claims: string[]): Child {
  const c = spawnNode(['test/store/fixtures/claim-holder.ts', dir, 'rev@abc', String(ttlMs), ...claims]);
  children.push(c);
  return c;
}

const claimedBy = async (c: Child): Promise<string[]> => JSON.parse(await c.waitLine((l) => l.startsWith('{"claimed"'), 'claims')).claimed;

describe('claims under a lease', () => {
  it('are exclusive while the lease lives, free after unclaim, and gone with the lease', async () => {
    const a = (await tryAcquireLease(dir, 'rev@1', { holder: 'a' }))!;
    const b = (await tryAcquireLease(dir, 'rev@2', { holder: 'b' }))!;
    expect(await a.claim('blob-x')).toBe(true);
    expect(await a.claim('blob-x')).toBe(true); // ours already
    expect(await a.claim('blob-y')).toBe(true);
    // Another lease's claim and a plain lease of the same name both see it held.
    expect(await b.claim('blob-x')).toBe(false);
    expect(await tryAcquireLease(dir, 'blob-x', { holder: 'c' })).toBeUndefined();
    expect(await isLeaseLive(dir, 'blob-x')).toBe(true);
    expect((await readLease(dir, 'blob-x'))?.group).toBe('rev@1');

    await a.unclaim('blob-x');
    expect(await b.claim('blob-x')).toBe(true);
    // Releasing the lease removes its remaining claims' files too.
    await a.release();
    expect((await fsp.readdir(dir)).sort()).toEqual(['blob-x.lease', 'rev@2.lease']);
    expect(await b.claim('blob-y')).toBe(true);
    await b.release();
    expect(await fsp.readdir(dir)).toEqual([]);
  });

  it('one heartbeat keeps many claims alive, with no descriptor or timer per claim', async () => {
    const a = (await tryAcquireLease(dir, 'rev@1', { holder: 'a', ttlMs: 600, heartbeatMs: 100 }))!;
    const names = Array.from({ length: 200 }, (_, i) => `blob-${i}`);
    for (const n of names) expect(await a.claim(n)).toBe(true);
    const timers = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    // Many ttls later every claim still holds (their files were never rewritten).
    const before = await Promise.all(names.slice(0, 5).map((n) => fsp.stat(join(dir, `${n}.lease`))));
    await new Promise((r) => setTimeout(r, 2_500));
    const b = (await tryAcquireLease(dir, 'rev@2', { holder: 'b' }))!;
    for (const n of names.slice(0, 20)) expect(await b.claim(n)).toBe(false);
    const after = await Promise.all(names.slice(0, 5).map((n) => fsp.stat(join(dir, `${n}.lease`))));
    expect(after.map((s) => s.mtimeMs)).toEqual(before.map((s) => s.mtimeMs));
    expect(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length).toBeLessThanOrEqual(timers + 1);
    const live = await listLeases(dir);
    expect(live.filter((l) => l.name.startsWith('blob-') && !l.expired)).toHaveLength(200);
    await a.release();
    await b.release();
  });

  it("a SIGKILLed holder's claims are free at once", async () => {
    const names = ['blob-a', 'blob-b', 'blob-c'];
    const h = holder(30_000, names);
    expect(await claimedBy(h)).toEqual(names);
    const me = (await tryAcquireLease(dir, 'rev@mine', { holder: 'me' }))!;
    expect(await me.claim('blob-a')).toBe(false);
    h.proc.kill('SIGKILL');
    await h.exited;
    const killedAt = Date.now();
    for (const n of names) expect(await me.claim(n)).toBe(true);
    expect(Date.now() - killedAt).toBeLessThan(1_000);
    await me.release();
  }, 60_000);

  it('claims of a holder that stops renewing (SIGSTOP) expire with its lease; it learns it lost', async () => {
    const h = holder(1_000, ['blob-a']);
    expect(await claimedBy(h)).toEqual(['blob-a']);
    const me = (await tryAcquireLease(dir, 'rev@mine', { holder: 'me' }))!;
    expect(await me.claim('blob-a')).toBe(false);
    h.proc.kill('SIGSTOP');
    const stoppedAt = Date.now();
    // ttl 1 s + margin 0.5 s by both clocks; the process is alive, so only expiry frees it.
    await until(() => me.claim('blob-a'), 100, 10_000);
    expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(1_000);
    h.proc.kill('SIGCONT');
    await h.waitLine((l) => l === 'lost', 'lost');
    await me.release();
  }, 60_000);

  it('a claim whose group is gone or was re-acquired is expired for everyone', async () => {
    const a = (await tryAcquireLease(dir, 'rev@1', { holder: 'a' }))!;
    expect(await a.claim('blob-z')).toBe(true);
    const claim = await fsp.readFile(join(dir, 'blob-z.lease'), 'utf8');
    await a.release();
    // A claim left behind by a crash between its write and the release...
    await fsp.writeFile(join(dir, 'blob-z.lease'), claim);
    expect((await listLeases(dir)).find((l) => l.name === 'blob-z')?.expired).toBe(true);
    // ...also when the group's name is held again by a new acquisition (another nonce).
    const again = (await tryAcquireLease(dir, 'rev@1', { holder: 'a2' }))!;
    expect(await isLeaseLive(dir, 'blob-z')).toBe(false);
    const other = (await tryAcquireLease(dir, 'rev@2', { holder: 'b' }))!;
    expect(await other.claim('blob-z')).toBe(true);
    expect((await readLease(dir, 'blob-z'))?.group).toBe('rev@2');
    await other.release();
    await again.release();
  });
});
