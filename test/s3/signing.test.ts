/**
 * Per-request signing in the engine (the seam s3:// origins use): every request to the origin's
 * host is signed afresh, and nothing of it goes anywhere else - not to a host the origin redirects
 * to, not to a chunk source (peer), not into the log.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { REDACT_PATHS } from '../../src/core/log.js';
import { fetchBlobs, type ChunkSourceRequest } from '../../src/transfer/index.js';
import { MiB, blobRequest, makeContent, serveRange, startServer, tempDir, type TestServer } from '../transfer/helpers.js';

const SECRET = 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x, Signature=deadbeefsecret';
const TOKEN = 'session-token-that-must-stay-home';

const servers: TestServer[] = [];
const dirs: Array<() => void> = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
  for (const d of dirs.splice(0)) d();
});

describe('origins that sign each request', () => {
  it('sign every request to the origin host with fresh headers, and never send them after a redirect', async () => {
    const content = makeContent(6 * MiB + 11, 7);
    const cdn = await startServer((req, res) => serveRange(cdn, req, res, content), '127.0.0.2');
    const origin = await startServer((req, res, n) => {
      // Every other request is sent elsewhere, as S3 does with a 307 for a bucket that moved.
      if (n % 2 === 1) {
        res.writeHead(307, { location: `${cdn.url}/moved/object` });
        res.end();
        return;
      }
      return serveRange(origin, req, res, content, { etag: 'abc' });
    });
    servers.push(cdn, origin);
    const { dir, cleanup } = tempDir();
    dirs.push(cleanup);
    let signed = 0;
    const logged: string[] = [];
    const logger = pino({ level: 'trace', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, new Writable({ write: (c, _e, cb) => (logged.push(String(c)), cb()) }));
    const req = blobRequest(content, `${origin.url}/bucket/object`);
    req.origin.sign = async ({ url }) => {
      expect(new URL(url).host).toBe(origin.host);
      signed++;
      const headers = { authorization: SECRET, 'x-amz-security-token': TOKEN, 'x-amz-date': `n${signed}` };
      // A careless debug line must not print them either.
      logger.debug({ headers, credentials: { accessKeyId: 'AKID', secretAccessKey: 'deadbeefsecret', sessionToken: TOKEN } }, 'signed');
      return headers;
    };
    const peerSaw: ChunkSourceRequest[] = [];
    const [got] = await fetchBlobs([req], {
      partialDir: dir,
      stateDir: dir,
      connections: 4,
      chunkSize: MiB,
      onEvent: (e) => logger.info({ event: e }, 'transfer'),
      chunkSources: [{ name: 'peer', fetch: async (r) => (peerSaw.push(r), undefined) }],
    });
    expect(got!.sha256).toBe(req.sha256);

    expect(origin.requests.length).toBeGreaterThan(1);
    expect(signed).toBe(origin.requests.length);
    for (const r of origin.requests) expect(r.headers.authorization).toBe(SECRET);
    // Each request carried its own signature time.
    expect(new Set(origin.requests.map((r) => r.headers['x-amz-date'])).size).toBe(origin.requests.length);
    expect(cdn.requests.length).toBeGreaterThan(0);
    for (const r of cdn.requests) {
      expect(r.headers.authorization).toBeUndefined();
      expect(r.headers['x-amz-security-token']).toBeUndefined();
    }
    // A peer is asked by content hash and byte range only.
    expect(peerSaw.length).toBeGreaterThan(0);
    expect(JSON.stringify(peerSaw.map(({ signal: _s, ...rest }) => rest))).not.toMatch(/bucket|object|127\.0\.0\.1/);
    const all = logged.join('');
    expect(all).toContain('"signed"');
    expect(all).not.toContain('deadbeefsecret');
    expect(all).not.toContain(TOKEN);
  });
});
