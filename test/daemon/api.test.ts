import { request } from 'node:http';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { COMMIT, fakePull, type FakePull } from './fake-pull.js';
import { parsePrometheus, tempDir, until } from './helpers.js';

const log = pino({ level: 'silent' });

let dir: string;
let cleanup: () => Promise<void>;
let daemon: Daemon;
let fp: FakePull;

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('sf-api-'));
  fp = fakePull();
  fp.script.set('hf://org/declared@main', ['ok']);
  const cfg = parseConfig(
    `store: ${join(dir, 'store')}\nstateDir: ${join(dir, 'state')}\nlisten: 127.0.0.1:0\nmaxRate: 10MB/s\nmodels: [hf://org/declared]\n`,
    join(dir, 'config.yaml'),
  );
  // storeSyncMs 0: the fake pull publishes nothing, so the store would say every model is gone.
  daemon = await startDaemon(cfg, { pull: fp.pull, logger: log, backoff: { baseMs: 20, maxMs: 50, slowBaseMs: 20, slowMaxMs: 50 }, resyncMs: 0, storeSyncMs: 0 });
});
afterEach(async () => {
  await daemon.stop();
  await cleanup();
});

async function http(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; text: string; json: any }> {
  const res = await fetch(daemon.url + path, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: Object.fromEntries(res.headers), text, json };
}

/** Read a server-sent event stream to its end; returns the events in order. `onFirst` runs when the first event arrives. */
function readEvents(path: string, onFirst?: () => void): Promise<Array<{ event: string; data: any }>> {
  return new Promise((resolve, reject) => {
    const req = request(daemon.url + path, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}`));
      expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        if (onFirst && /^data: .*\n\n/m.test(buf)) {
          const first = onFirst;
          onFirst = undefined;
          first();
        }
      });
      res.on('end', () => {
        const events = buf
          .split('\n\n')
          .filter((b) => b.includes('data: '))
          .map((b) => {
            const event = /^event: (.*)$/m.exec(b)?.[1] ?? 'message';
            return { event, data: JSON.parse(/^data: (.*)$/m.exec(b)![1]!) };
          });
        resolve(events);
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const enc = encodeURIComponent;

describe('daemon HTTP API', () => {
  it('answers health and readiness, and lists declared models', async () => {
    expect((await http('GET', '/healthz')).status).toBe(200);
    expect((await http('GET', '/readyz')).text).toBe('ready\n');
    await until(() => daemon.reconciler.get('hf://org/declared@main')?.state === 'ready');
    const list = await http('GET', '/v1/models');
    expect(list.status).toBe(200);
    expect(list.json).toEqual([
      expect.objectContaining({ ref: 'hf://org/declared@main', commit: COMMIT, state: 'ready', bytesDone: 1000, bytesTotal: 1000, path: expect.stringContaining(COMMIT), error: null }),
    ]);
    const one = await http('GET', `/v1/models/${enc('hf://org/declared')}`);
    expect(one.json).toMatchObject({ ref: 'hf://org/declared@main', state: 'ready' });
    // The ref need not be encoded.
    expect((await http('GET', '/v1/models/hf://org/declared@main')).json).toMatchObject({ state: 'ready' });
    expect((await http('GET', `/v1/models/${enc('hf://org/unknown')}`)).status).toBe(404);
    expect((await http('GET', `/v1/models/${enc('hf://bad')}`)).status).toBe(400);
    // A model whose name is "events" is not mistaken for the events route when encoded.
    await http('POST', '/v1/pulls', { ref: 'hf://org/events' });
    expect((await http('GET', `/v1/models/${enc('hf://org/events')}`)).json).toMatchObject({ ref: 'hf://org/events@main' });
  });

  it('POST /v1/pulls accepts a ref (202) and rejects bad input with a reason (400)', async () => {
    fp.script.set('ms://org/new@master', ['ok']);
    const r = await http('POST', '/v1/pulls', { ref: 'ms://org/new', include: ['*.json'] });
    expect(r.status).toBe(202);
    expect(r.json).toMatchObject({ ref: 'ms://org/new@master', declared: false });
    expect(['pending', 'downloading', 'verifying', 'ready']).toContain(r.json.state);
    expect(r.headers.location).toBe(`/v1/models/${enc('ms://org/new@master')}`);
    await until(() => daemon.reconciler.get('ms://org/new@master')?.state === 'ready');
    expect(fp.calls.find((c) => c.ref === 'ms://org/new@master')!.opts.include).toEqual(['*.json']);

    const bad: Array<[unknown, RegExp]> = [
      [{ ref: 'ftp://x/y' }, /unknown scheme/],
      [{ ref: 'org' }, /expected exactly ORG\/NAME/],
      [{}, /ref: expected a model reference/],
      [{ ref: 'hf://a/b', include: 'x' }, /include: expected a list/],
      [{ ref: 'hf://a/b', extra: 1 }, /extra: unknown key \(expected one of: ref, include, exclude\)/],
      [{ ref: 'hf://a/b', exclude: ['*'.repeat(1025)] }, /exclude: pattern longer than 1024 characters/],
      ['{not json', /invalid JSON/],
      [[1], /expected a JSON object/],
    ];
    for (const [body, reason] of bad) {
      const res = await http('POST', '/v1/pulls', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.json.error).toMatch(reason);
    }
    expect((await http('POST', '/v1/pulls', 'x', { 'content-type': 'text/plain' })).status).toBe(415);
    // JSON routes require the content-type (what a cross-site form post cannot send), also for a JSON body.
    for (const [method, path] of [['POST', '/v1/pulls'], ['PUT', '/v1/config/max-rate']]) {
      const res = await fetch(daemon.url + path, { method, body: new Blob(['{"ref":"hf://org/x","maxRate":1}']) });
      expect(res.headers.get('content-type')).toMatch(/json/);
      expect([res.status, ((await res.json()) as { error: string }).error]).toEqual([415, 'expected a JSON body with content-type: application/json']);
    }
    expect(daemon.reconciler.get('hf://org/x@main')).toBeUndefined();
    expect(daemon.limiter.rate).toBe(10_000_000);
    const wrong = await http('DELETE', '/v1/pulls');
    expect(wrong.status).toBe(405);
    expect(wrong.headers.allow).toBe('POST');
    expect((await http('GET', '/v1/nothing')).status).toBe(404);
  });

  it('streams one model\'s progress as server-sent events until it is ready', async () => {
    fp.script.set('hf://org/big@main', ['block']);
    await http('POST', '/v1/pulls', { ref: 'hf://org/big' });
    await until(() => fp.running() === 1);
    // Released once the stream is surely open: its first event has arrived.
    const got = await readEvents(`/v1/models/${enc('hf://org/big@main')}/events`, () => fp.release('hf://org/big@main'));
    expect(got.length).toBeGreaterThanOrEqual(2);
    expect(got[0]).toMatchObject({ event: 'progress', data: { state: 'downloading', bytesTotal: 1000 } });
    const last = got[got.length - 1]!;
    expect(last).toEqual({ event: 'ready', data: expect.objectContaining({ state: 'ready', bytesDone: 1000, bytesTotal: 1000, path: expect.stringContaining(COMMIT), error: null }) });
    expect(got.slice(0, -1).every((e) => e.event === 'progress')).toBe(true);
    for (const e of got) expect(Object.keys(e.data)).toEqual(expect.arrayContaining(['state', 'bytesDone', 'bytesTotal', 'path', 'error']));
    // An already-ready model gives one final event right away.
    expect(await readEvents(`/v1/models/${enc('hf://org/big')}/events`)).toEqual([expect.objectContaining({ event: 'ready' })]);
  });

  it('reports failures in the stream and keeps following with until=ready', async () => {
    // The first attempt fails only once the plain stream follows it (its first event releases it);
    // failing at once raced the stream's connect against the retries, and a stream that arrived
    // during the blocked attempt waited forever.
    fp.script.set('hf://org/bad@main', ['blockfail', 'block']);
    await http('POST', '/v1/pulls', { ref: 'hf://org/bad' });
    const plain = await readEvents(`/v1/models/${enc('hf://org/bad')}/events`, () => fp.release('hf://org/bad@main'));
    expect(plain[plain.length - 1]).toMatchObject({ event: 'failed', data: { state: 'failed', error: 'connection reset by origin (simulated)' } });
    const patient = readEvents(`/v1/models/${enc('hf://org/bad')}/events?until=ready`);
    await until(() => fp.running() === 1);
    fp.release('hf://org/bad@main');
    const got = await patient;
    expect(got[got.length - 1]!.event).toBe('ready');
    expect((await http('GET', `/v1/models/${enc('hf://org/bad')}/events?until=never`)).status).toBe(400);
  });

  it('changes the rate limit at run time', async () => {
    expect((await http('GET', '/v1/config/max-rate')).json).toEqual({ maxRate: 10_000_000 });
    const r = await http('PUT', '/v1/config/max-rate', { maxRate: '50MB/s' });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ maxRate: 50_000_000 });
    expect(daemon.limiter.rate).toBe(50_000_000);
    expect((await http('PUT', '/v1/config/max-rate', { maxRate: 'fast' })).status).toBe(400);
    expect((await http('PUT', '/v1/config/max-rate', {})).status).toBe(400);
    expect((await http('PUT', '/v1/config/max-rate', { maxRate: 0 })).json).toEqual({ maxRate: 0 });
  });

  it('refuses a rate that would round to 0 (= unlimited) or is beyond any link, and keeps the limit it had', async () => {
    expect((await http('PUT', '/v1/config/max-rate', { maxRate: '20MB/s' })).status).toBe(200);
    const cases: Array<[string | number, RegExp]> = [
      ['0.0001B/s', /below 1 B\/s/],
      [0.5, /below 1 B\/s/],
      ['4bit/s', /below 1 B\/s/],
      [1e308, /above/],
      ['99999999TB/s', /above/],
    ];
    for (const [maxRate, reason] of cases) {
      const r = await http('PUT', '/v1/config/max-rate', { maxRate });
      expect(r.status, String(maxRate)).toBe(400);
      expect(r.json.error).toMatch(reason);
      expect(daemon.limiter.rate).toBe(20_000_000);
    }
    // The words and numbers that do mean "unlimited", and the smallest real limit, still work.
    expect((await http('PUT', '/v1/config/max-rate', { maxRate: '1B/s' })).json).toEqual({ maxRate: 1 });
    expect((await http('PUT', '/v1/config/max-rate', { maxRate: '0MB/s' })).json).toEqual({ maxRate: 0 });
  });

  it('/metrics is valid Prometheus text with the swift_fetch_ metrics', async () => {
    await until(() => daemon.reconciler.get('hf://org/declared@main')?.state === 'ready');
    fp.script.set('hf://org/x@main', ['fail', 'ok']);
    await http('POST', '/v1/pulls', { ref: 'hf://org/x' });
    await until(() => daemon.reconciler.get('hf://org/x@main')?.state === 'ready');
    await http('PUT', '/v1/config/max-rate', { maxRate: '25MB/s' });
    const res = await http('GET', '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const samples = parsePrometheus(res.text);
    const v = (name: string, labels: Record<string, string> = {}) =>
      samples.find((s) => s.name === name && Object.entries(labels).every(([k, x]) => s.labels[k] === x))?.value;
    // Each successful fake pull reports 500 bytes from the origin and 500 from a peer after its first event.
    expect(v('swift_fetch_bytes_received_total', { source: 'origin' })).toBe(1000);
    expect(v('swift_fetch_bytes_received_total', { source: 'peer' })).toBe(1000);
    expect(v('swift_fetch_models', { state: 'ready' })).toBe(2);
    expect(v('swift_fetch_models', { state: 'failed' })).toBe(0);
    expect(v('swift_fetch_active_transfers')).toBe(0);
    expect(v('swift_fetch_rate_limit_bytes_per_second')).toBe(25_000_000);
    expect(v('swift_fetch_pulls_total', { result: 'failure' })).toBe(1);
    expect(v('swift_fetch_pulls_total', { result: 'success' })).toBe(2);
    expect(v('swift_fetch_verification_failures_total')).toBe(0);
    expect(v('swift_fetch_store_bytes', { kind: 'used' })).toBe(0);
    expect(v('swift_fetch_store_bytes', { kind: 'free' })).toBeGreaterThan(0);
    expect(samples.every((s) => s.name.startsWith('swift_fetch_'))).toBe(true);
  });
});
