import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fetchBlobs, type EngineOptions } from '../../src/transfer/index.js';
import { AuthError, IntegrityError, NetworkError, NotFoundError } from '../../src/core/errors.js';
import type { TransferEvent } from '../../src/core/transfer.js';
import { MiB, blobRequest, makeContent, serveRange, sha256, startServer, tempDir, type TestServer } from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function opts(extra: Partial<EngineOptions> = {}): EngineOptions {
  const t = tempDir();
  cleanups.push(t.cleanup);
  return {
    partialDir: join(t.dir, 'store/.swift-fetch/partial'),
    stateDir: join(t.dir, 'state'),
    env: {},
    retryBaseMs: 20,
    retryMaxMs: 200,
    ...extra,
  };
}

async function server(h: (srv: TestServer, req: Parameters<Parameters<typeof startServer>[0]>[0], res: Parameters<Parameters<typeof startServer>[0]>[1], n: number) => unknown, host?: string): Promise<TestServer> {
  const srv: TestServer = await startServer((req, res, n) => h(srv, req, res, n) as void, host);
  cleanups.push(() => srv.close());
  return srv;
}

describe('faults', () => {
  it('503 and 429 with Retry-After are retried after the announced wait', async () => {
    const content = makeContent(2 * MiB, 11);
    const srv = await server((s, req, res, n) => {
      if (n === 0) {
        res.writeHead(503, { 'retry-after': '1' });
        return res.end('busy');
      }
      if (n === 1) {
        res.writeHead(429, { 'retry-after': new Date(Date.now() + 1000).toUTCString() });
        return res.end('slow down');
      }
      return serveRange(s, req, res, content);
    });
    const events: TransferEvent[] = [];
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], opts({ onEvent: (e) => events.push(e) }));
    expect(got!.sha256).toBe(sha256(content));
    const retries = events.filter((e) => e.type === 'retry');
    expect(retries).toHaveLength(2);
    // The server's wish, not our 20 ms backoff (an HTTP date has one-second resolution).
    expect(retries[0]).toMatchObject({ delayMs: 1000 });
    expect((retries[1] as { delayMs: number }).delayMs).toBeGreaterThan(0);
    expect((retries[1] as { reason: string }).reason).toContain('429');
  });

  it('a reset mid-body resumes from the last byte received, not from the chunk start', async () => {
    const content = makeContent(3 * MiB, 12);
    const srv = await server((s, req, res, n) => serveRange(s, req, res, content, n === 0 ? { resetAfter: 1 * MiB + 4096 } : {}));
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], opts({ connections: 1, chunkSize: 4 * MiB }));
    expect(got!.sha256).toBe(sha256(content));
    expect(srv.requests[0]!.range).toBe(`bytes=0-${content.length - 1}`);
    // Everything before the reset was kept: the retry starts at a byte we never had.
    const second = /^bytes=(\d+)-/.exec(srv.requests[1]!.range!);
    const from = Number(second![1]);
    expect(from).toBeGreaterThan(0);
    expect(from).toBeLessThanOrEqual(MiB + 4096);
    expect(srv.bytesSent()).toBeLessThanOrEqual(content.length + 4096 + 64 * 1024);
  });

  it('a stalled connection is replaced', async () => {
    const content = makeContent(2 * MiB, 13);
    const srv = await server((s, req, res, n) => serveRange(s, req, res, content, n === 0 ? { stallAfter: 256 * 1024 } : {}));
    const events: TransferEvent[] = [];
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], opts({ stallTimeoutMs: 300, onEvent: (e) => events.push(e) }));
    expect(got!.sha256).toBe(sha256(content));
    expect(events.some((e) => e.type === 'retry' && /no bytes/.test(e.reason))).toBe(true);
    expect(srv.requests.length).toBe(2);
    expect(srv.requests[1]!.range).toMatch(/^bytes=\d+-/);
    expect(srv.requests[1]!.range).not.toMatch(/^bytes=0-/);
  });

  it('a byte corrupted once is repaired by refetching', async () => {
    const content = makeContent(3 * MiB, 14);
    let corrupted = 0;
    const srv = await server((s, req, res) => {
      const covers = req.headers.range?.startsWith('bytes=1048576-');
      const corruptAt = covers && corrupted++ === 0 ? MiB + 77 : undefined;
      return serveRange(s, req, res, content, corruptAt === undefined ? {} : { corruptAt });
    });
    const events: TransferEvent[] = [];
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], opts({ chunkSize: MiB, onEvent: (e) => events.push(e) }));
    expect(got!.sha256).toBe(sha256(content));
    expect(readFileSync(got!.path).equals(content)).toBe(true);
    expect(events.filter((e) => e.type === 'hash-mismatch')).toHaveLength(1);
    expect(corrupted).toBeGreaterThanOrEqual(2);
  });

  it('a byte corrupted every time fails with IntegrityError (exit 5) and leaves nothing that looks finished', async () => {
    const content = makeContent(2 * MiB, 15);
    const srv = await server((s, req, res) => serveRange(s, req, res, content, { corruptAt: 1000 }));
    const o = opts({ chunkSize: MiB });
    const err = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], o).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    expect((err as IntegrityError).exitCode).toBe(5);
    expect((err as IntegrityError).expected).toBe(`sha256:${sha256(content)}`);
    expect(readdirSync(o.partialDir)).toEqual([]);
    // Refetched once, then gave up.
    expect(srv.bytesSent()).toBe(2 * content.length);
  });

  it('a server that ignores Range is read as one stream', async () => {
    const content = makeContent(5 * MiB + 3, 16);
    const srv = await server((s, req, res) => serveRange(s, req, res, content, { ignoreRange: true }));
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], opts({ connections: 8, chunkSize: MiB }));
    expect(got!.sha256).toBe(sha256(content));
    // One probe request, answered 200 with everything; nothing else asked.
    expect(srv.requests.length).toBe(1);
    expect(srv.bytesSent()).toBe(content.length);
  });

  it('a Range-ignoring server that drops the stream is re-read, skipping what we hold', async () => {
    const content = makeContent(4 * MiB, 17);
    const srv = await server((s, req, res, n) => serveRange(s, req, res, content, { ignoreRange: true, ...(n === 0 ? { resetAfter: 3 * MiB } : {}) }));
    const [got] = await fetchBlobs([blobRequest(content, `${srv.url}/f`)], opts({ chunkSize: MiB }));
    expect(got!.sha256).toBe(sha256(content));
    expect(srv.requests.length).toBe(2);
    expect(srv.requests[1]!.range).toMatch(/^bytes=3\d+-$/);
  });

  it('follows the hub redirect to the CDN, re-signs an expired URL through the hub, and never sends hub headers to the CDN', async () => {
    const content = makeContent(6 * MiB, 18);
    let signature = 0;
    const valid = new Set<string>();
    let expireNext = 0;
    const cdn = await server((s, req, res) => {
      const sig = new URL(req.url!, 'http://x').searchParams.get('sig')!;
      if (!valid.has(sig)) {
        res.writeHead(403, { 'content-type': 'application/xml' });
        return res.end('<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>');
      }
      if (expireNext > 0 && s.requests.length > 2) {
        expireNext--;
        valid.delete(sig);
      }
      return serveRange(s, req, res, content, { etag: 'cdn-etag' });
    }, '127.0.0.2');
    const hub = await server((s, req, res) => {
      if (req.headers.authorization !== 'Bearer hf_secret') {
        res.writeHead(401, { 'x-error-code': 'GatedRepo', 'x-error-message': 'Access to model is restricted.' });
        return res.end();
      }
      const sig = String(++signature);
      valid.add(sig);
      res.writeHead(302, { location: `${cdn.url}/repos/ab/cd/blob?sig=${sig}`, 'x-linked-etag': `"${sha256(content)}"`, 'x-linked-size': String(content.length) });
      res.end();
    });
    expireNext = 1;
    const req = blobRequest(content, `${hub.url}/org/m/resolve/abc/model.safetensors`, { origin: { url: `${hub.url}/org/m/resolve/abc/model.safetensors`, hubHeaders: { authorization: 'Bearer hf_secret', cookie: 'm_session_id=hf_secret' } } });
    const [got] = await fetchBlobs([req], opts({ connections: 4, chunkSize: MiB }));
    expect(got!.sha256).toBe(sha256(content));
    // The hub was asked once up front, then again after the CDN refused an expired signature
    // (at most once per connection that saw the refusal).
    expect(hub.requests.length).toBeGreaterThanOrEqual(2);
    expect(hub.requests.length).toBeLessThanOrEqual(1 + 4);
    expect(cdn.requests.filter((r) => r.url.includes('sig=1')).length).toBeGreaterThan(2);
    expect(cdn.requests.some((r) => r.url.includes('sig=1'))).toBe(true);
    expect(cdn.requests.some((r) => r.url.includes('sig=2'))).toBe(true);
    for (const r of cdn.requests) {
      expect(r.headers.authorization).toBeUndefined();
      expect(r.headers.cookie).toBeUndefined();
    }
    expect(JSON.stringify(cdn.requests.map((r) => r.headers))).not.toContain('hf_secret');
  });

  it('keeps hub headers on a relative (same-host) redirect', async () => {
    const content = makeContent(100_000, 19);
    const hub = await server((s, req, res) => {
      if (req.url!.startsWith('/old/')) {
        res.writeHead(307, { location: req.url!.replace('/old/', '/new/') });
        return res.end();
      }
      if (req.headers.authorization !== 'Bearer t') {
        res.writeHead(401);
        return res.end();
      }
      return serveRange(s, req, res, content, { etag: 'git-sha' });
    });
    const [got] = await fetchBlobs([blobRequest(content, `${hub.url}/old/f`, { origin: { url: `${hub.url}/old/f`, hubHeaders: { authorization: 'Bearer t' } } })], opts());
    expect(got!.sha256).toBe(sha256(content));
    expect(hub.requests.map((r) => r.url)).toEqual(['/old/f', '/new/f']);
  });

  it('maps hub answers to exit codes: 401 gated -> auth (4), 404 -> not found (3), endless 503 -> network (7)', async () => {
    const content = makeContent(1000, 20);
    const hub = await server((s, req, res) => {
      if (req.url === '/gated') {
        res.writeHead(401, { 'x-error-code': 'GatedRepo', 'x-error-message': 'Access to model org/m is restricted' });
        return res.end();
      }
      if (req.url === '/missing') {
        res.writeHead(404, { 'x-error-code': 'EntryNotFound' });
        return res.end();
      }
      res.writeHead(503);
      res.end();
    });
    const gated = await fetchBlobs([blobRequest(content, `${hub.url}/gated`)], opts()).catch((e: unknown) => e);
    expect(gated).toBeInstanceOf(AuthError);
    expect((gated as AuthError).exitCode).toBe(4);
    expect((gated as Error).message).toMatch(/HF_TOKEN/);
    expect((gated as Error).message).toMatch(/MODELSCOPE_API_TOKEN/);
    const missing = await fetchBlobs([blobRequest(content, `${hub.url}/missing`)], opts()).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(NotFoundError);
    expect((missing as NotFoundError).exitCode).toBe(3);
    const down = await fetchBlobs([blobRequest(content, `${hub.url}/down`)], opts({ maxRetries: 2 })).catch((e: unknown) => e);
    expect(down).toBeInstanceOf(NetworkError);
    expect((down as NetworkError).exitCode).toBe(7);
    expect(hub.requests.filter((r) => r.url === '/down')).toHaveLength(3);
  });

  it('a changed ETag at the origin restarts a resumed file', async () => {
    const content = makeContent(4 * MiB, 21);
    let etag = 'v1';
    let stopAfter = Infinity;
    const srv = await server((s, req, res) => {
      if (s.requests.length > stopAfter) {
        res.writeHead(503, { 'retry-after': '60' });
        return res.end();
      }
      return serveRange(s, req, res, content, { etag });
    });
    const o = opts({ connections: 1, chunkSize: MiB, maxRetries: 0 });
    stopAfter = 2;
    // First run: two chunks land, then the origin goes away.
    await expect(fetchBlobs([blobRequest(content, `${srv.url}/f`)], o)).rejects.toBeInstanceOf(NetworkError);
    stopAfter = Infinity;
    const before = srv.bytesSent();
    expect(before).toBe(2 * MiB);
    // Same origin, same ETag: resume.
    etag = 'v1';
    const ev1: TransferEvent[] = [];
    const o2 = { ...o, onEvent: (e: TransferEvent) => ev1.push(e) };
    const probe = fetchBlobs([blobRequest(content, `${srv.url}/f`)], o2);
    await probe;
    expect(ev1[0]).toMatchObject({ type: 'blob-start', resumedBytes: 2 * MiB });
    expect(srv.bytesSent() - before).toBe(2 * MiB);
    // Now a partial from v1 meets an origin that says v2: start over.
    const o3 = opts({ connections: 1, chunkSize: MiB, maxRetries: 0 });
    etag = 'v1';
    stopAfter = srv.requests.length + 2;
    await expect(fetchBlobs([blobRequest(content, `${srv.url}/f`)], o3)).rejects.toBeInstanceOf(NetworkError);
    stopAfter = Infinity;
    etag = 'v2';
    const mark = srv.bytesSent();
    const ev2: TransferEvent[] = [];
    await fetchBlobs([blobRequest(content, `${srv.url}/f`)], { ...o3, onEvent: (e) => ev2.push(e) });
    expect(ev2.filter((e) => e.type === 'blob-start').map((e) => (e as { resumedBytes: number }).resumedBytes)).toEqual([2 * MiB, 0]);
    expect(srv.bytesSent() - mark).toBe(content.length);
    expect(existsSync(o3.partialDir)).toBe(true);
  });
});
