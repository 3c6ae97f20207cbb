import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { NetworkError, NotFoundError, AuthError } from '../../src/core/errors.js';
import { formatRef, parseRef } from '../../src/core/ref.js';
import type { ModelSpec } from '../../src/daemon/config.js';
import { Reconciler, retryDelay, type ModelStatus } from '../../src/daemon/reconciler.js';
import { COMMIT, fakePull, type FakePull } from './fake-pull.js';
import { until } from './helpers.js';

const log = pino({ level: 'silent' });
const FAST = { baseMs: 20, maxMs: 80, slowBaseMs: 200, slowMaxMs: 400 };

function spec(ref: string, extra: Partial<ModelSpec> = {}): ModelSpec {
  const r = parseRef(ref);
  return { ref: r, key: formatRef(r), ...extra };
}

let rec: Reconciler | undefined;
afterEach(async () => {
  await rec?.stop(1000);
  rec = undefined;
});

function make(fp: FakePull, concurrency = 2, extra: { resyncMs?: number; onDemand?: { maxRequested: number; forgetFailedAfterMs: number } } = {}): Reconciler {
  rec = new Reconciler({
    pull: fp.pull,
    pullOptions: () => ({ store: '/store', stateDir: '/state', holder: 'test-holder' }),
    concurrency,
    logger: log,
    backoff: FAST,
    resyncMs: extra.resyncMs ?? 0,
    ...(extra.onDemand ? { onDemand: extra.onDemand } : {}),
  });
  return rec;
}

const state = (r: Reconciler, key: string) => r.get(key)?.state;

describe('reconciler', () => {
  it('pulls every declared model to ready with its filters and the shared options', async () => {
    const fp = fakePull();
    const r = make(fp);
    r.setDeclared([spec('hf://org/a'), spec('ms://org/b', { include: ['*.json'], exclude: ['*.bin'] })]);
    expect(r.list().map((m) => m.state)).toEqual(['pending', 'pending']); // nothing runs before start()
    r.start();
    await until(() => r.list().every((m) => m.state === 'ready'));
    const b = r.get('ms://org/b@master')!;
    expect(b).toMatchObject({ commit: COMMIT, bytesDone: 1000, bytesTotal: 1000, error: null, declared: true, path: `/store/models/ms/org/b/${COMMIT}` });
    const call = fp.calls.find((c) => c.ref === 'ms://org/b@master')!;
    expect(call.opts).toMatchObject({ store: '/store', stateDir: '/state', holder: 'test-holder', include: ['*.json'], exclude: ['*.bin'] });
    expect(call.opts.signal).toBeInstanceOf(AbortSignal);
    expect(fp.calls).toHaveLength(2);
  });

  it('retries a failing model with backoff until it succeeds, showing the error meanwhile', async () => {
    const fp = fakePull();
    fp.script.set('hf://org/flaky@main', ['fail', 'fail', 'ok']);
    const r = make(fp);
    const states: ModelStatus[] = [];
    r.on('change', (s) => states.push(s));
    r.setDeclared([spec('hf://org/flaky')]);
    r.start();
    await until(() => state(r, 'hf://org/flaky@main') === 'ready');
    const failed = states.filter((s) => s.state === 'failed');
    expect(failed.length).toBe(2);
    expect(failed[0]).toMatchObject({ error: 'connection reset by origin (simulated)', attempts: 1 });
    expect(failed[1]).toMatchObject({ attempts: 2 });
    expect(Date.parse(failed[0]!.nextRetryAt!)).toBeGreaterThan(0);
    expect(fp.calls).toHaveLength(3);
    expect(r.get('hf://org/flaky@main')).toMatchObject({ error: null, attempts: 0, nextRetryAt: null });
  });

  it('never gives up: a model that keeps failing keeps being retried', async () => {
    const fp = fakePull();
    fp.script.set('hf://org/down@main', ['fail']);
    const r = make(fp);
    r.setDeclared([spec('hf://org/down')]);
    r.start();
    // Five attempts in, and between attempts it shows as failed (with the retry scheduled).
    await until(() => fp.calls.length >= 5 && state(r, 'hf://org/down@main') === 'failed');
    expect(r.get('hf://org/down@main')!.nextRetryAt).not.toBeNull();
    expect(r.get('hf://org/down@main')!.attempts).toBeGreaterThanOrEqual(4);
  });

  it('backs off exponentially with a cap and jitter, slower for not-found and auth errors', () => {
    const b = { baseMs: 1000, maxMs: 60_000, slowBaseMs: 30_000, slowMaxMs: 1_800_000 };
    const net = new NetworkError('x');
    expect(retryDelay(1, net, b, () => 1)).toBe(1000);
    expect(retryDelay(3, net, b, () => 1)).toBe(4000);
    expect(retryDelay(3, net, b, () => 0)).toBe(2000);
    expect(retryDelay(50, net, b, () => 1)).toBe(60_000);
    expect(retryDelay(1, new NotFoundError('x'), b, () => 1)).toBe(30_000);
    expect(retryDelay(2, new AuthError('x'), b, () => 1)).toBe(60_000);
    expect(retryDelay(99, new AuthError('x'), b, () => 1)).toBe(1_800_000);
  });

  it('runs at most `concurrency` pulls at once', async () => {
    const fp = fakePull();
    const refs = ['a', 'b', 'c', 'd', 'e'].map((n) => `hf://org/${n}@main`);
    for (const k of refs) fp.script.set(k, ['block', 'ok']);
    const r = make(fp, 2);
    r.setDeclared(refs.map((k) => spec(k)));
    r.start();
    await until(() => fp.running() === 2);
    expect(r.active).toBe(2);
    for (let i = 0; i < refs.length; i++) {
      await until(() => fp.calls.length > i);
      fp.release(fp.calls[i]!.ref);
    }
    await until(() => r.list().every((m) => m.state === 'ready'));
    expect(fp.maxRunning).toBe(2);
  });

  it('unpins removed models without deleting them; an in-flight pull of one finishes first', async () => {
    const fp = fakePull();
    fp.script.set('hf://org/slow@main', ['block']);
    const r = make(fp);
    r.setDeclared([spec('hf://org/a'), spec('hf://org/slow')]);
    r.start();
    await until(() => state(r, 'hf://org/a@main') === 'ready' && fp.running() === 1);
    expect([...r.inUseKeys()]).toEqual([`hf--org--slow@${COMMIT}`]);
    r.setDeclared([]);
    expect(r.get('hf://org/a@main')).toBeUndefined();
    expect(r.get('hf://org/slow@main')).toMatchObject({ declared: false, state: 'downloading' });
    expect(r.declaredSpecs()).toEqual([]);
    fp.release('hf://org/slow@main');
    await until(() => r.get('hf://org/slow@main') === undefined);
    expect(fp.calls).toHaveLength(2);
  });

  it('pulls again when a declared model\'s filters change', async () => {
    const fp = fakePull();
    const r = make(fp);
    r.setDeclared([spec('hf://org/a', { include: ['*.json'] })]);
    r.start();
    await until(() => state(r, 'hf://org/a@main') === 'ready');
    r.setDeclared([spec('hf://org/a', { include: ['*.json', '*.safetensors'] })]);
    await until(() => fp.calls.length === 2 && state(r, 'hf://org/a@main') === 'ready');
    expect(fp.calls[1]!.opts.include).toEqual(['*.json', '*.safetensors']);
    // Re-declaring the same thing changes nothing.
    r.setDeclared([spec('hf://org/a', { include: ['*.json', '*.safetensors'] })]);
    await new Promise((res) => setTimeout(res, 50));
    expect(fp.calls).toHaveLength(2);
  });

  it('on-demand requests are tracked but not pinned; asking again for a failed one retries at once', async () => {
    const fp = fakePull();
    fp.script.set('hf://org/x@main', ['notfound', 'ok']);
    const r = make(fp);
    r.start();
    const s = r.request(spec('hf://org/x'));
    expect(s).toMatchObject({ state: 'pending', declared: false });
    await until(() => state(r, 'hf://org/x@main') === 'failed');
    // Slow backoff for not-found (200 ms here); a new request skips it.
    r.request(spec('hf://org/x'));
    await until(() => state(r, 'hf://org/x@main') === 'ready');
    expect(r.declaredSpecs()).toEqual([]);
  });

  it('stop() aborts pulls in flight without marking them failed', async () => {
    const fp = fakePull();
    fp.script.set('hf://org/big@main', ['block']);
    const r = make(fp);
    r.setDeclared([spec('hf://org/big')]);
    r.start();
    await until(() => fp.running() === 1);
    await r.stop(5000);
    expect(fp.running()).toBe(0);
    expect(fp.calls[0]!.opts.signal!.aborted).toBe(true);
    expect(state(r, 'hf://org/big@main')).toBe('pending');
    // No new work after stop.
    r.setDeclared([spec('hf://org/other')]);
    r.kick();
    await new Promise((res) => setTimeout(res, 50));
    expect(fp.calls).toHaveLength(1);
  });

  it('re-syncs ready models periodically and keeps them ready when a resync fails', async () => {
    const fp = fakePull();
    fp.script.set('hf://org/a@main', ['ok', 'fail', 'ok']);
    const r = make(fp, 2, { resyncMs: 30 });
    const seen: string[] = [];
    r.on('change', (s) => seen.push(s.state));
    r.setDeclared([spec('hf://org/a')]);
    r.start();
    await until(() => fp.calls.length >= 3);
    await until(() => state(r, 'hf://org/a@main') === 'ready' && fp.running() === 0);
    // After the first ready, the failed resync never flipped the state.
    expect(seen.slice(seen.indexOf('ready'))).not.toContain('failed');
  });

  it('a declared model goes first: two on-demand pulls holding both slots do not keep a newly declared model pending', async () => {
    const fp = fakePull();
    for (const k of ['hf://org/asked1@main', 'hf://org/asked2@main']) fp.script.set(k, ['block', 'block']);
    const r = make(fp, 2);
    r.start();
    r.request(spec('hf://org/asked1'));
    r.request(spec('hf://org/asked2'));
    await until(() => fp.running() === 2);
    r.setDeclared([spec('hf://org/declared')]);
    // Neither on-demand pull was released: the declared model got a slot by pausing one of them.
    await until(() => state(r, 'hf://org/declared@main') === 'ready', 25, 5_000);
    const paused = ['hf://org/asked1@main', 'hf://org/asked2@main'].filter((k) => fp.calls.filter((c) => c.ref === k).length === 2 || state(r, k) === 'pending');
    expect(paused, JSON.stringify({ calls: fp.calls.map((c) => c.ref), list: r.list().map((m) => [m.ref, m.state]) })).toHaveLength(1);
    // Paused is not failed: no attempt counted, and it resumes once there is room.
    expect(r.get(paused[0]!)).toMatchObject({ attempts: 0, error: null });
    expect(fp.maxRunning).toBe(2);
    for (const k of ['hf://org/asked1@main', 'hf://org/asked2@main']) fp.release(k);
    await until(() => fp.calls.filter((c) => c.ref === paused[0]).length === 2);
    fp.release(paused[0]!);
    await until(() => r.list().every((m) => m.state === 'ready'));
  });

  it('declared pre-pulls ask the origin as background, requested pulls as urgent, re-syncs as background', async () => {
    const fp = fakePull();
    const r = make(fp, 2, { resyncMs: 50 });
    r.setDeclared([spec('hf://org/pre')]);
    r.start();
    r.request(spec('hf://org/asked'));
    await until(() => r.list().every((m) => m.state === 'ready') && fp.calls.length >= 4);
    const first = (ref: string) => fp.calls.find((c) => c.ref === ref)!.opts.priority;
    expect(first('hf://org/pre@main')).toBe('background');
    expect(first('hf://org/asked@main')).toBe('urgent');
    // Once ready, nobody waits on a re-sync.
    const resyncs = fp.calls.slice(2);
    expect(resyncs.length).toBeGreaterThan(0);
    for (const c of resyncs) expect(c.opts.priority).toBe('background');
  });

  it('a pod asking for a model being pre-pulled promotes it: the pull goes on as urgent, with no failure counted', async () => {
    const fp = fakePull();
    fp.script.set('hf://org/big@main', ['block', 'block']);
    const r = make(fp, 2);
    r.setDeclared([spec('hf://org/big')]);
    r.start();
    await until(() => fp.running() === 1);
    expect(fp.calls[0]!.opts.priority).toBe('background');
    // An init container starts and asks for it.
    r.request(spec('hf://org/big'));
    await until(() => fp.calls.length === 2 && fp.running() === 1);
    expect(fp.calls[1]!.opts.priority).toBe('urgent');
    expect(r.get('hf://org/big@main')).toMatchObject({ attempts: 0, error: null });
    fp.release('hf://org/big@main');
    await until(() => state(r, 'hf://org/big@main') === 'ready');
    // Asking again for a model already going on as urgent changes nothing.
    expect(fp.calls).toHaveLength(2);
  });

  it('a queued declared model runs before on-demand pulls that were queued earlier', async () => {
    const fp = fakePull();
    fp.script.set('hf://org/first@main', ['block', 'ok']);
    const r = make(fp, 1);
    r.start();
    r.request(spec('hf://org/first'));
    await until(() => fp.running() === 1);
    r.request(spec('hf://org/second'));
    r.setDeclared([spec('hf://org/declared')]);
    await until(() => r.list().every((m) => m.state === 'ready'), 25, 5_000);
    expect(fp.calls.map((c) => c.ref)).toEqual(['hf://org/first@main', 'hf://org/declared@main', expect.any(String), expect.any(String)]);
    expect(fp.calls.slice(2).map((c) => c.ref).sort()).toEqual(['hf://org/first@main', 'hf://org/second@main']);
  });

  it('an on-demand model the hub does not have is not retried by itself, and a failed one is forgotten after a while', async () => {
    const fp = fakePull();
    fp.script.set('hf://org/none@main', ['notfound']);
    fp.script.set('hf://org/flaky@main', ['fail']);
    const r = make(fp, 2, { onDemand: { maxRequested: 10, forgetFailedAfterMs: 1_000 } });
    const removed: string[] = [];
    r.on('removed', (k) => removed.push(k));
    r.start();
    r.request(spec('hf://org/none'));
    r.request(spec('hf://org/flaky'));
    await until(() => state(r, 'hf://org/none@main') === 'failed');
    expect(r.get('hf://org/none@main')).toMatchObject({ exitCode: 3, nextRetryAt: null });
    // Several slow backoffs (200-400 ms here) pass: still one attempt. The network failure is retried.
    await new Promise((res) => setTimeout(res, 800));
    expect(fp.calls.filter((c) => c.ref === 'hf://org/none@main')).toHaveLength(1);
    expect(fp.calls.filter((c) => c.ref === 'hf://org/flaky@main').length).toBeGreaterThan(1);
    // Nobody asked again: both are forgotten.
    await until(() => r.get('hf://org/none@main') === undefined && r.get('hf://org/flaky@main') === undefined, 25, 5_000);
    expect(removed.sort()).toEqual(['hf://org/flaky@main', 'hf://org/none@main']);
    const calls = fp.calls.length;
    await new Promise((res) => setTimeout(res, 300));
    expect(fp.calls).toHaveLength(calls);
  });

  it('bounds the on-demand models: the oldest settled one makes room, and with none settled a new one is refused', async () => {
    const fp = fakePull();
    for (const n of ['a', 'b', 'c', 'd']) fp.script.set(`hf://org/${n}@main`, ['notfound']);
    for (const n of ['x1', 'x2', 'x3']) fp.script.set(`hf://org/${n}@main`, ['block']);
    const r = make(fp, 2, { onDemand: { maxRequested: 3, forgetFailedAfterMs: 60_000 } });
    r.start();
    r.setDeclared([spec('hf://org/declared')]);
    for (const n of ['a', 'b', 'c']) r.request(spec(`hf://org/${n}`));
    await until(() => ['a', 'b', 'c'].every((n) => state(r, `hf://org/${n}@main`) === 'failed'));
    r.request(spec('hf://org/d'));
    expect(r.get('hf://org/a@main')).toBeUndefined();
    expect(r.list().filter((m) => !m.declared).map((m) => m.ref).sort()).toEqual(['hf://org/b@main', 'hf://org/c@main', 'hf://org/d@main']);
    await until(() => state(r, 'hf://org/d@main') === 'failed');
    for (const n of ['x1', 'x2', 'x3']) r.request(spec(`hf://org/${n}`));
    await until(() => fp.running() === 2);
    // x1-x3 are all still to settle: nothing can make room.
    expect(() => r.request(spec('hf://org/x4'))).toThrow(expect.objectContaining({ name: 'TooManyRequested', message: expect.stringMatching(/3 on-demand models/) }));
    expect(r.get('hf://org/x4@main')).toBeUndefined();
    // Asking again for one it tracks is always fine, and declared models do not count.
    expect(r.request(spec('hf://org/x1')).ref).toBe('hf://org/x1@main');
    r.setDeclared([spec('hf://org/declared'), spec('hf://org/declared2')]);
    expect(r.list().filter((m) => m.declared)).toHaveLength(2);
    for (const n of ['x1', 'x2', 'x3']) fp.release(`hf://org/${n}@main`);
  });
});
