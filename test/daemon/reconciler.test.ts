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

function make(fp: FakePull, concurrency = 2, extra: { resyncMs?: number } = {}): Reconciler {
  rec = new Reconciler({
    pull: fp.pull,
    pullOptions: () => ({ store: '/store', stateDir: '/state', holder: 'test-holder' }),
    concurrency,
    logger: log,
    backoff: FAST,
    resyncMs: extra.resyncMs ?? 0,
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
});
