import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetworkError } from '../../src/core/errors.js';
import { parseRef } from '../../src/core/ref.js';
import { HuggingFaceSource } from '../../src/sources/huggingface.js';
import { apiGet } from '../../src/sources/http.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';

let hub: FakeHub;
const agent = new Agent();
beforeAll(async () => {
  hub = await startFakeHub({ treePageSize: 1 });
  await hub.addRepo({ id: 'org/model', files: { 'a.json': '{}', 'b.json': '[]' } });
});
afterAll(async () => {
  await agent.close();
  await hub?.close();
});

describe('hub API calls retry through the shared backoff', () => {
  it('a listing survives 503s and a 429 with Retry-After on the revision and tree pages', async () => {
    hub.resetStats();
    hub.fault({ kind: 'status', status: 503, retryAfter: 0, path: '/api/models/org/model/revision/main', times: 2 });
    hub.fault({ kind: 'status', status: 429, retryAfter: 1, path: /\/tree\//, times: 1 });
    const t0 = Date.now();
    const m = await new HuggingFaceSource({ endpoint: hub.hfEndpoint, token: undefined }, agent).resolve(parseRef('hf://org/model'));
    expect(m.files.map((f) => f.path)).toEqual(['a.json', 'b.json']);
    // The 429's Retry-After (1 s) was waited for, not the quarter-second first step.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
    expect(hub.log.filter((e) => e.fault === 'status')).toHaveLength(3);
  });

  it('gives up after `retries` with a NetworkError naming the host, and returns a final retryable status as is', async () => {
    const unreachable = 'http://127.0.0.1:9/api/x';
    const fast = { baseMs: 5, maxMs: 10 };
    await expect(apiGet(unreachable, { dispatcher: agent, retries: 2, backoff: fast })).rejects.toBeInstanceOf(NetworkError);
    hub.fault({ kind: 'status', status: 502, path: '/api/models/org/model/revision/main', times: Infinity });
    try {
      hub.resetStats();
      const res = await apiGet(`${hub.hfEndpoint}/api/models/org/model/revision/main`, { dispatcher: agent, retries: 3, backoff: fast });
      expect(res.status).toBe(502);
      expect(hub.log.filter((e) => e.fault === 'status')).toHaveLength(4);
    } finally {
      hub.clearFaults();
    }
  });
});

describe('hub API calls and redirects', () => {
  it('a redirect is handed back, never followed (the token must not travel to where a Location points)', async () => {
    const { createServer } = await import('node:http');
    const seen: string[] = [];
    const srv = createServer((req, res) => {
      seen.push(req.url!);
      if (req.url === '/api/a') res.writeHead(302, { location: '/api/b' }).end();
      else res.end('{}');
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const res = await apiGet(`http://127.0.0.1:${(srv.address() as { port: number }).port}/api/a`, { dispatcher: agent, headers: { authorization: 'Bearer hf_x' } });
      expect(res.status).toBe(302);
      expect(seen).toEqual(['/api/a']);
    } finally {
      await new Promise((r) => srv.close(r));
    }
  });
});
