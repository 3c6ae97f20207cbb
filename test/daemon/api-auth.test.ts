/**
 * Who may use the node API (issue 12, item 1): the bearer token from api.tokenFile for changing
 * routes, loopback only without one, api.protectReads for the reading routes. A real daemon (with
 * a scripted pull), real HTTP, the token in a kubelet-style Secret volume, and, for the
 * non-loopback cases, a client in a network namespace of its own.
 */
import { mkdir, rename, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { fakePull, type FakePull } from './fake-pull.js';
import { parsePrometheus, tempDir, until } from './helpers.js';
import { remoteClient, remoteMissing } from './remote.js';

const TOKEN = 'api-token-Zq8wX3vL0pR7';
const enc = encodeURIComponent;

let dir: string;
let cleanup: () => Promise<void>;
const daemons: Daemon[] = [];
let logText: string;

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('sf-api-auth-'));
  logText = '';
});
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop()));
  await cleanup();
});

/**
 * A Secret volume as the kubelet writes it: `token` -> `..data/token`, `..data` -> a timestamped
 * directory. `rotate` writes a new directory and swaps `..data` atomically, as the kubelet does.
 */
async function secretVolume(name: string, value: string): Promise<{ file: string; rotate: (v: string) => Promise<void> }> {
  const vol = join(dir, name);
  let n = 0;
  const version = async (v: string) => {
    const ts = `..2024_01_01_00_00_0${n++}.000`;
    await mkdir(join(vol, ts), { recursive: true });
    await writeFile(join(vol, ts, 'token'), `${v}\n`);
    return ts;
  };
  await mkdir(vol, { recursive: true });
  await symlink(await version(value), join(vol, '..data'));
  await symlink('..data/token', join(vol, 'token'));
  return {
    file: join(vol, 'token'),
    rotate: async (v) => {
      const ts = await version(v);
      await symlink(ts, join(vol, '..data_tmp'));
      await rename(join(vol, '..data_tmp'), join(vol, '..data'));
    },
  };
}

async function start(extra: string, listen = '127.0.0.1:0', fp: FakePull = fakePull()): Promise<Daemon> {
  const cfg = parseConfig(`store: ${join(dir, 'store')}\nstateDir: ${join(dir, 'state')}\nlisten: ${listen}\nmaxRate: 10MB/s\n${extra}`, join(dir, 'config.yaml'));
  // A logger that redacts nothing: whatever the daemon logs is seen as it is.
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logText += String(chunk);
      cb();
    },
  });
  const d = await startDaemon(cfg, { pull: fp.pull, logger: pino({ level: 'trace' }, sink), resyncMs: 0, storeSyncMs: 0 });
  daemons.push(d);
  return d;
}

async function http(d: Daemon, method: string, path: string, opts: { body?: unknown; headers?: Record<string, string> } = {}) {
  const headers = { ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }), ...opts.headers };
  const res = await fetch(d.url + path, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

/** One sample of the refusal counter (read off its own line: right after start, prom-client's event-loop gauges may say `Nan`). */
async function refused(d: Daemon, reason: string): Promise<number | undefined> {
  const text = await (await fetch(`${d.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`swift_fetch_api_refused_total{reason="${reason}"} `));
  return line === undefined ? undefined : parsePrometheus(`# TYPE swift_fetch_api_refused_total counter\n${line}\n`)[0]!.value;
}

describe('node API with api.tokenFile', () => {
  it('changing routes need the bearer token (401 otherwise, before the body is read); reading routes stay open', async () => {
    const secret = await secretVolume('api-token', TOKEN);
    const d = await start(`api: { tokenFile: ${secret.file} }\n`);
    const pull = { ref: 'hf://org/wanted' };
    const attempts: Array<Record<string, string>> = [{}, bearer('wrong'), { authorization: TOKEN }, { authorization: `Basic ${TOKEN}` }, bearer(`${TOKEN}x`)];
    for (const headers of attempts) {
      const r = await http(d, 'POST', '/v1/pulls', { body: pull, headers });
      expect(r.status, JSON.stringify(headers)).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect(r.json.error).toMatch(headers.authorization ? /API token was not accepted/ : /needs the API token/);
      const rate = await http(d, 'PUT', '/v1/config/max-rate', { body: { maxRate: '1B/s' }, headers });
      expect(rate.status).toBe(401);
    }
    // No content-type, no token: refused for the token (a page cannot learn anything from a 415).
    const bare = await fetch(`${d.url}/v1/pulls`, { method: 'POST', body: JSON.stringify(pull) });
    expect(bare.status).toBe(401);
    expect(d.reconciler.get('hf://org/wanted@main')).toBeUndefined();
    expect(d.limiter.rate).toBe(10_000_000);
    expect(await refused(d, 'unauthorized')).toBe(attempts.length * 2 + 1);

    const ok = await http(d, 'POST', '/v1/pulls', { body: pull, headers: bearer(TOKEN) });
    expect(ok.status).toBe(202);
    expect(ok.json).toMatchObject({ ref: 'hf://org/wanted@main' });
    expect((await http(d, 'PUT', '/v1/config/max-rate', { body: { maxRate: '5MB/s' }, headers: bearer(TOKEN) })).json).toEqual({ maxRate: 5_000_000 });

    // Reading routes need nothing without api.protectReads.
    for (const path of ['/healthz', '/readyz', '/metrics', '/v1/models', `/v1/models/${enc('hf://org/wanted')}`, '/v1/config/max-rate']) {
      expect((await http(d, 'GET', path)).status, path).toBe(200);
    }
    // The token never reaches the log, neither the right one nor a wrong guess close to it.
    expect(logText).toContain('pull requested');
    expect(logText).not.toContain(TOKEN);
  });

  it('follows the Secret: a kubelet ..data swap takes effect without a restart', async () => {
    const secret = await secretVolume('api-token', TOKEN);
    const d = await start(`api: { tokenFile: ${secret.file} }\n`);
    expect((await http(d, 'POST', '/v1/pulls', { body: { ref: 'hf://org/a' }, headers: bearer(TOKEN) })).status).toBe(202);
    await secret.rotate('rotated-token-4f9a');
    await until(async () => (await http(d, 'POST', '/v1/pulls', { body: { ref: 'hf://org/b' }, headers: bearer('rotated-token-4f9a') })).status === 202, 200, 10_000);
    expect((await http(d, 'POST', '/v1/pulls', { body: { ref: 'hf://org/c' }, headers: bearer(TOKEN) })).status).toBe(401);
    expect(logText).not.toContain('rotated-token-4f9a');
  });

  it('api.protectReads puts the reading routes under the token; probes and metrics stay open', async () => {
    const secret = await secretVolume('api-token', TOKEN);
    const d = await start(`api: { tokenFile: ${secret.file}, protectReads: true }\nmodels: [hf://org/declared]\n`);
    const reads = ['/v1/models', `/v1/models/${enc('hf://org/declared')}`, `/v1/models/${enc('hf://org/declared')}/events`, '/v1/config/max-rate'];
    for (const path of reads) {
      expect((await http(d, 'GET', path)).status, path).toBe(401);
      expect((await http(d, 'GET', path, { headers: bearer('nope') })).status, path).toBe(401);
    }
    await until(() => d.reconciler.get('hf://org/declared@main')?.state === 'ready');
    for (const path of reads) expect((await http(d, 'GET', path, { headers: bearer(TOKEN) })).status, path).toBe(200);
    for (const path of ['/healthz', '/readyz', '/metrics']) expect((await http(d, 'GET', path)).status, path).toBe(200);
  });

  it('a missing or empty api.tokenFile stops the start with exit 2 instead of leaving the API open', async () => {
    await expect(start(`api: { tokenFile: ${join(dir, 'nowhere')} }\n`)).rejects.toMatchObject({ exitCode: 2, message: expect.stringMatching(/api\.tokenFile .*nowhere.*ENOENT/) });
    await writeFile(join(dir, 'empty'), ' \n');
    await expect(start(`api: { tokenFile: ${join(dir, 'empty')} }\n`)).rejects.toMatchObject({ exitCode: 2, message: expect.stringMatching(/api\.tokenFile .* is empty/) });
  });
});

describe('node API budget (issue 12, item 3)', () => {
  it('each client gets requestsPerMinute changing requests; past that 429 with Retry-After, and reads are not counted', async () => {
    const d = await start('api: { requestsPerMinute: 3 }\n');
    for (const n of [1, 2, 3]) expect((await http(d, 'POST', '/v1/pulls', { body: { ref: `hf://org/m${n}` } })).status).toBe(202);
    const over = await http(d, 'POST', '/v1/pulls', { body: { ref: 'hf://org/m4' } });
    expect(over.status).toBe(429);
    // 3 a minute: the next one is earned in 20 s.
    expect(over.headers.get('retry-after')).toBe('20');
    expect(over.json.error).toMatch(/too many requests from 127\.0\.0\.1/);
    expect((await http(d, 'PUT', '/v1/config/max-rate', { body: { maxRate: '1B/s' } })).status).toBe(429);
    for (let i = 0; i < 10; i++) expect((await http(d, 'GET', '/v1/models')).status).toBe(200);
    expect(d.reconciler.get('hf://org/m4@main')).toBeUndefined();
    expect(d.limiter.rate).toBe(10_000_000);
    expect(await refused(d, 'rate_limited')).toBe(2);
  });

  it('with api.maxRequested on-demand models all unsettled, a new one is refused with 429; declared ones and repeats are not', async () => {
    const fp = fakePull();
    for (const n of ['a', 'b']) fp.script.set(`hf://org/${n}@main`, ['block']);
    const d = await start('api: { maxRequested: 2 }\nmodels: [hf://org/declared]\n', '127.0.0.1:0', fp);
    for (const n of ['a', 'b']) expect((await http(d, 'POST', '/v1/pulls', { body: { ref: `hf://org/${n}` } })).status).toBe(202);
    const third = await http(d, 'POST', '/v1/pulls', { body: { ref: 'hf://org/c' } });
    expect(third.status).toBe(429);
    expect(third.headers.get('retry-after')).toBe('30');
    expect(third.json.error).toMatch(/already tracks 2 on-demand models/);
    expect((await http(d, 'POST', '/v1/pulls', { body: { ref: 'hf://org/a' } })).status).toBe(202);
    expect((await http(d, 'POST', '/v1/pulls', { body: { ref: 'hf://org/declared' } })).status).toBe(202);
    expect(await refused(d, 'too_many_models')).toBe(1);
    for (const n of ['a', 'b']) fp.release(`hf://org/${n}@main`);
  });
});

const NO_REMOTE = remoteMissing();

describe.skipIf(NO_REMOTE)(`node API seen from another host${NO_REMOTE ? ` (skipped: ${NO_REMOTE})` : ''}`, () => {
  it('without api.tokenFile, changing routes are taken only from loopback clients (403 otherwise); reads stay open', async () => {
    const remote = remoteClient();
    try {
      const d = await start('', '0.0.0.0:0');
      const port = new URL(d.url).port;
      const json = { 'content-type': 'application/json' };
      const far = await remote.request('POST', `http://${remote.hostIp}:${port}/v1/pulls`, { headers: json, body: '{"ref":"hf://org/far"}' });
      expect(far.status).toBe(403);
      expect(JSON.parse(far.body).error).toMatch(/no api\.tokenFile.*loopback/);
      expect((await remote.request('PUT', `http://${remote.hostIp}:${port}/v1/config/max-rate`, { headers: json, body: '{"maxRate":"1B/s"}' })).status).toBe(403);
      expect(d.reconciler.get('hf://org/far@main')).toBeUndefined();
      expect(d.limiter.rate).toBe(10_000_000);
      expect((await remote.request('GET', `http://${remote.hostIp}:${port}/v1/models`)).status).toBe(200);
      expect(await refused(d, 'forbidden')).toBe(2);
      // The same request from loopback is taken.
      expect((await http(d, 'POST', '/v1/pulls', { body: { ref: 'hf://org/near' } })).status).toBe(202);
      // With api.protectReads and no token, reading is for loopback clients too.
      const guarded = await start('api: { protectReads: true }\n', '0.0.0.0:0');
      expect((await remote.request('GET', `http://${remote.hostIp}:${new URL(guarded.url).port}/v1/models`)).status).toBe(403);
      expect((await remote.request('GET', `http://${remote.hostIp}:${new URL(guarded.url).port}/healthz`)).status).toBe(200);
      expect((await http(guarded, 'GET', '/v1/models')).status).toBe(200);
    } finally {
      remote.close();
    }
  });

  it('with api.tokenFile, a client on another host is taken with the token, and only with it', async () => {
    const remote = remoteClient();
    try {
      const secret = await secretVolume('api-token', TOKEN);
      const d = await start(`api: { tokenFile: ${secret.file} }\n`, '0.0.0.0:0');
      const url = `http://${remote.hostIp}:${new URL(d.url).port}/v1/pulls`;
      const json = { 'content-type': 'application/json' };
      expect((await remote.request('POST', url, { headers: json, body: '{"ref":"hf://org/far"}' })).status).toBe(401);
      const ok = await remote.request('POST', url, { headers: { ...json, ...bearer(TOKEN) }, body: '{"ref":"hf://org/far"}' });
      expect(ok.status).toBe(202);
      expect(d.reconciler.get('hf://org/far@main')).toBeDefined();
    } finally {
      remote.close();
    }
  });
});
