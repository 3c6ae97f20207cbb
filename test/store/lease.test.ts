import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ownIdentity } from '../../src/state/host.js';
import { isLeaseLive, listLeases, readLease, tryAcquireLease } from '../../src/store/lease.js';
import { spawnNode, tempDir, until, type Child } from '../daemon/helpers.js';

const CONTENDER = 'test/daemon/fixtures/lease-contender.ts';

let dir: string;
let cleanup: () => Promise<void>;
const children: Child[] = [];
const cleanups: Array<() => Promise<void>> = [];

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('sf-lease-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  for (const c of children.splice(0)) {
    if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    await c.exited;
  }
  await cleanup();
});

function contender(name: string, holder: string, ttlMs: number, barrier: string, hold: string): Child {
  const c = spawnNode([CONTENDER, dir, name, holder, String(ttlMs), barrier, hold]);
  children.push(c);
  return c;
}

async function race(n: number, name: string, ttlMs: number, hold: string): Promise<Child[]> {
  const barrier = join(dir, `go-${Math.random().toString(36).slice(2)}`);
  const cs = Array.from({ length: n }, (_, i) => contender(name, `p${i}`, ttlMs, barrier, hold));
  await Promise.all(cs.map((c) => c.waitLine((l) => l === 'ready', 'ready')));
  await fsp.writeFile(barrier, '');
  await Promise.all(cs.map((c) => c.waitLine((l) => l.startsWith('{"won"'), 'result')));
  return cs;
}

const won = (c: Child) => c.lines.some((l) => l.startsWith('{"won":true'));

describe('leases in one process', () => {
  it('is exclusive until released, then free again', async () => {
    const a = await tryAcquireLease(dir, 'hf--Org--M@abc', { holder: 'a' });
    expect(a).toBeDefined();
    expect(await tryAcquireLease(dir, 'hf--Org--M@abc', { holder: 'b' })).toBeUndefined();
    const info = await readLease(dir, 'hf--Org--M@abc');
    expect(info).toMatchObject({ holder: 'a', pid: process.pid });
    expect(await isLeaseLive(dir, 'hf--Org--M@abc')).toBe(true);
    // Other names are independent.
    const other = await tryAcquireLease(dir, 'hf--Org--M@def', { holder: 'b' });
    expect(other).toBeDefined();
    await a!.release();
    await a!.release(); // idempotent
    expect(await readLease(dir, 'hf--Org--M@abc')).toBeUndefined();
    const b = await tryAcquireLease(dir, 'hf--Org--M@abc', { holder: 'b' });
    expect(b?.holder).toBe('b');
    await b!.release();
    await other!.release();
    expect(await listLeases(dir)).toEqual([]);
  });

  it('rejects names that could escape the lease directory', async () => {
    for (const bad of ['../x', 'a/b', '', '.hidden', 'a\u0000b', 'x'.repeat(300)]) {
      await expect(tryAcquireLease(dir, bad, { holder: 'a' })).rejects.toMatchObject({ exitCode: 2 });
    }
  });

  it('heartbeats keep a lease alive far past its ttl', async () => {
    const a = await tryAcquireLease(dir, 'm', { holder: 'a', ttlMs: 1000, heartbeatMs: 100 });
    const first = (await readLease(dir, 'm'))!.renewedAt;
    // Several ttls later a contender still finds it live, and the holder has renewed it.
    await until(async () => (await readLease(dir, 'm'))!.renewedAt > first + 3000);
    expect(await tryAcquireLease(dir, 'm', { holder: 'b', ttlMs: 1000 })).toBeUndefined();
    expect(a!.lost).toBe(false);
    await a!.release();
  });

  it('an expired lease (holder stopped renewing) is taken over; the old holder learns it lost', async () => {
    // Simulate a holder that died: a lease file whose renewal time and mtime are long past.
    const stale = { holder: 'dead', host: 'elsewhere', pid: 1, acquiredAt: Date.now() - 120_000, renewedAt: Date.now() - 120_000, ttlMs: 1000, nonce: 'x' };
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(join(dir, 'm.lease'), JSON.stringify(stale));
    const old = new Date(Date.now() - 120_000);
    await fsp.utimes(join(dir, 'm.lease'), old, old);
    expect((await listLeases(dir))[0]).toMatchObject({ name: 'm', expired: true });
    const b = await tryAcquireLease(dir, 'm', { holder: 'b' });
    expect(b).toBeDefined();
    expect((await readLease(dir, 'm'))?.holder).toBe('b');
    // No tombstones or temp files left behind.
    expect((await fsp.readdir(dir)).sort()).toEqual(['m.lease']);
    await b!.release();
  });

  it('a holder whose file was replaced marks the lease lost and calls onLost', async () => {
    let lostCalls = 0;
    const a = await tryAcquireLease(dir, 'm', { holder: 'a', ttlMs: 600, heartbeatMs: 50, onLost: () => lostCalls++ });
    await fsp.unlink(join(dir, 'm.lease'));
    const b = await tryAcquireLease(dir, 'm', { holder: 'b', ttlMs: 600 });
    expect(b).toBeDefined();
    await until(() => a!.lost);
    expect(lostCalls).toBe(1);
    // Releasing a lost lease must not delete the new holder's file.
    await a!.release();
    expect((await readLease(dir, 'm'))?.holder).toBe('b');
    await b!.release();
  });
});

describe('leases across processes', () => {
  it('exactly one of 6 simultaneous processes wins a free lease', async () => {
    const cs = await race(6, 'hf--Org--M@c1', 10_000, '1500');
    expect(cs.filter(won)).toHaveLength(1);
  }, 120_000);

  it('exactly one of 6 simultaneous processes takes over an expired lease (2 rounds)', async () => {
    for (let round = 0; round < 2; round++) {
      const name = `m${round}`;
      const stale = { holder: 'dead', host: 'x', pid: 1, acquiredAt: 0, renewedAt: Date.now() - 60_000, ttlMs: 1000, nonce: 'n' };
      await fsp.mkdir(dir, { recursive: true });
      await fsp.writeFile(join(dir, `${name}.lease`), JSON.stringify(stale));
      const old = new Date(Date.now() - 60_000);
      await fsp.utimes(join(dir, `${name}.lease`), old, old);
      const cs = await race(6, name, 10_000, '1000');
      expect(cs.filter(won)).toHaveLength(1);
      const winner = cs.find(won)!;
      expect((await readLease(dir, name))?.holder).toBe(JSON.parse(winner.lines.find((l) => l.startsWith('{"won"'))!).holder);
      // The winner kept it for its whole hold (nobody else took it over meanwhile).
      await winner.waitLine((l) => l.startsWith('{"lost"'));
      expect(winner.lines).toContain('{"lost":false}');
      await Promise.all(cs.map((c) => c.exited));
      expect((await fsp.readdir(dir)).filter((f) => f.startsWith(name))).toEqual([]);
    }
  }, 120_000);

  it('a SIGKILLed holder on this node frees its lease at once, though its ttl is far from over', async () => {
    const barrier = join(dir, 'go');
    const holder = contender('m', 'victim', 30_000, barrier, 'forever');
    await holder.waitLine((l) => l === 'ready');
    await fsp.writeFile(barrier, '');
    await holder.waitLine((l) => l.startsWith('{"won":true'), 'won');
    // Alive: its lease holds.
    expect(await tryAcquireLease(dir, 'm', { holder: 'parent' })).toBeUndefined();
    expect(await isLeaseLive(dir, 'm')).toBe(true);

    holder.proc.kill('SIGKILL');
    expect((await holder.exited).signal).toBe('SIGKILL');
    const killedAt = Date.now();
    // Same boot, same PID namespace: the pid is checked, found gone, and the lease is taken over.
    const taken = await until(() => tryAcquireLease(dir, 'm', { holder: 'parent' }), 25, 10_000);
    expect(Date.now() - killedAt).toBeLessThan(1_000);
    expect((await readLease(dir, 'm'))?.holder).toBe('parent');
    await taken.release();
  }, 120_000);

  it('a lease naming a live pid with another start time (a reused pid) counts as its dead holder', async () => {
    const me = ownIdentity();
    const now = Date.now();
    const reused = { holder: 'gone', host: me.host, pid: process.pid, acquiredAt: now, renewedAt: now, ttlMs: 60_000, nonce: 'n', boot: me.boot, pidns: me.pidns, pidStart: '1' };
    await fsp.writeFile(join(dir, 'r.lease'), JSON.stringify(reused));
    const b = await tryAcquireLease(dir, 'r', { holder: 'b' });
    expect(b?.holder).toBe('b');
    await b!.release();
    // The same lease with our real start time names a live holder: it holds.
    await fsp.writeFile(join(dir, 'r.lease'), JSON.stringify({ ...reused, pidStart: me.pidStart }));
    expect(await tryAcquireLease(dir, 'r', { holder: 'b' })).toBeUndefined();
  });

  it('a lease without holder identity (older versions) keeps ttl semantics even when its pid is gone', async () => {
    const gone = spawnSync(process.execPath, ['-e', '0']).pid!;
    const now = Date.now();
    await fsp.writeFile(join(dir, 'old.lease'), JSON.stringify({ holder: 'old', host: ownIdentity().host, pid: gone, acquiredAt: now, renewedAt: now, ttlMs: 60_000, nonce: 'n' }));
    expect(await tryAcquireLease(dir, 'old', { holder: 'b' })).toBeUndefined();
    expect((await listLeases(dir))[0]).toMatchObject({ name: 'old', expired: false });
  });

  // A holder in another PID namespace (another pod) cannot be judged by its pid: only its ttl frees
  // its lease. unshare puts a real contender in its own namespace, as Kubernetes does.
  const unshare = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status === 0;
  const inCI = process.env.CI === 'true' || process.env.CI === '1';
  it.skipIf(!unshare && !inCI)('a SIGKILLed holder in another PID namespace frees its lease only when its ttl runs out', async () => {
    expect(unshare, 'unshare --pid (root) is needed for this test; CI runs as root').toBe(true);
    const ttl = 2_000;
    const barrier = join(dir, 'go');
    const holder = inOwnPidNamespace([process.execPath, '--import', 'tsx', CONTENDER, dir, 'ns', 'other-pod', String(ttl), barrier, 'forever']);
    await holder.waitLine((l) => l === 'ready');
    await fsp.writeFile(barrier, '');
    await holder.waitLine((l) => l.startsWith('{"won":true'), 'won');
    const info = (await readLease(dir, 'ns'))!;
    expect(info.pidns).not.toBe(ownIdentity().pidns);
    holder.kill();
    await holder.exited;
    const killedAt = Date.now();
    // Its pid means nothing here: still held right after the kill...
    expect(await tryAcquireLease(dir, 'ns', { holder: 'parent', ttlMs: ttl })).toBeUndefined();
    // ...and free once ttl and margin have passed.
    const taken = await until(() => tryAcquireLease(dir, 'ns', { holder: 'parent', ttlMs: ttl }), 100, 20_000);
    expect(Date.now() - killedAt).toBeGreaterThan(ttl / 2);
    await taken.release();
  }, 120_000);
});

/** A process in a PID namespace of its own (pid 1 there); killing it kills the namespace. */
function inOwnPidNamespace(cmd: string[]) {
  const proc = spawn('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child=SIGKILL', ...cmd], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  createInterface({ input: proc.stdout! }).on('line', (l) => lines.push(l));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  cleanups.push(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  });
  return {
    kill: () => proc.kill('SIGKILL'),
    exited,
    waitLine: (pred: (l: string) => boolean, what = 'line') => until(() => lines.find(pred) ?? (proc.exitCode !== null ? Promise.reject(new Error(`exited before ${what}`)) : undefined), 25, 60_000),
  };
}
