import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { connect } from 'node:net';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { blobRequest, makeContent, serveRange, sha256, startServer, type TestServer } from '../transfer/helpers.js';
import { SwarmNode } from './harness.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-token-protocol';
const auth = { authorization: `Bearer ${TOKEN}` };

let nodes: SwarmNode[] = [];
let origin: TestServer | undefined;
afterEach(async () => {
  await Promise.all(nodes.map((n) => n.close()));
  nodes = [];
  await origin?.close();
  origin = undefined;
});

async function node(opts: Partial<Parameters<typeof SwarmNode.start>[0]> = {}): Promise<SwarmNode> {
  const n = await SwarmNode.start({ token: TOKEN, ...opts });
  nodes.push(n);
  await n.join({ static: [] });
  return n;
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body, json: () => JSON.parse(body.toString()) };
}

async function putBlob(n: SwarmNode, content: Buffer): Promise<string> {
  const h = sha256(content);
  const p = n.store.blobPath(h);
  await mkdir(dirname(p), { recursive: true });
  await writeFile(p, content);
  return h;
}

describe('peer API', () => {
  it('refuses every peer route without the right token (401)', async () => {
    const n = await node();
    const h = await putBlob(n, makeContent(1000, 1));
    for (const path of ['/v1/peer/info', `/v1/peer/blobs/${h}`, `/v1/peer/blobs/${h}/data`]) {
      for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: TOKEN }, { authorization: `Basic ${TOKEN}` }] as Array<Record<string, string>>) {
        const r = await get(n.url + path, headers);
        expect(r.status, `${path} ${JSON.stringify(headers)}`).toBe(401);
        expect(r.body.toString()).not.toContain('makeContent');
      }
    }
    expect(n.p2p!.counters.unauthorized).toBe(12);
    expect(n.p2p!.counters.bytesServed).toBe(0);
  });

  it('tells its node id and serves finished blobs by hash, with ranges', async () => {
    const n = await node();
    const content = makeContent(3 * MiB + 17, 2);
    const h = await putBlob(n, content);
    const info = await get(`${n.url}/v1/peer/info`, auth);
    expect(info.status).toBe(200);
    expect(info.json()).toEqual({ nodeId: n.p2p!.nodeId, protocol: 1 });

    const st = await get(`${n.url}/v1/peer/blobs/${h}`, auth);
    expect(st.status).toBe(200);
    expect(st.json()).toMatchObject({ nodeId: n.p2p!.nodeId, sha256: h, size: content.length, complete: true, fetching: false, ranges: [[0, content.length]] });

    const part = await get(`${n.url}/v1/peer/blobs/${h}/data`, { ...auth, range: 'bytes=1000-1999999' });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 1000-1999999/${content.length}`);
    expect(part.body.equals(content.subarray(1000, 2000000))).toBe(true);

    const whole = await get(`${n.url}/v1/peer/blobs/${h}/data`, auth);
    expect(whole.status).toBe(200);
    expect(sha256(whole.body)).toBe(h);

    expect((await get(`${n.url}/v1/peer/blobs/${h}/data`, { ...auth, range: `bytes=${content.length}-` })).status).toBe(416);
    const unknown = 'f'.repeat(64);
    expect((await get(`${n.url}/v1/peer/blobs/${unknown}`, auth)).status).toBe(404);
    expect((await get(`${n.url}/v1/peer/blobs/${unknown}/data`, { ...auth, range: 'bytes=0-9' })).status).toBe(404);
    // Content is addressed by hash only: anything else is refused before the disk is touched.
    expect((await get(`${n.url}/v1/peer/blobs/..%2F..%2Fetc%2Fpasswd/data`, auth)).status).toBe(400);
    expect((await get(`${n.url}/v1/peer/blobs/${h.toUpperCase()}`, auth)).status).toBe(400);
    expect(n.p2p!.counters.bytesServed).toBe(2000000 - 1000 + content.length);
  });

  it('serves durable chunks of a download in progress, long-polls for the rest', async () => {
    const content = makeContent(8 * MiB, 3);
    origin = await startServer((req, res) => serveRange(origin!, req, res, content, { rate: 3 * MiB }));
    const n = await node({ connections: 1, chunkSize: MiB });
    const h = sha256(content);
    const pulling = n.pull([blobRequest(content, `${origin.url}/blob`)]);
    let st: { complete: boolean; fetching: boolean; ranges: Array<[number, number]> } | undefined;
    for (let i = 0; i < 400; i++) {
      const r = await get(`${n.url}/v1/peer/blobs/${h}`, auth);
      if (r.status === 200) {
        st = r.json();
        if (st!.ranges.length > 0) break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(st).toMatchObject({ complete: false, fetching: true });
    const [s, e] = st!.ranges[0]!;
    const got = await get(`${n.url}/v1/peer/blobs/${h}/data`, { ...auth, range: `bytes=${s}-${e - 1}` });
    expect(got.status).toBe(206);
    expect(got.body.equals(content.subarray(s, e))).toBe(true);

    // The last chunk is not there yet: without waiting, 404 that says "fetching"; with a wait, the bytes.
    const last = `bytes=${7 * MiB}-${8 * MiB - 1}`;
    const now = await get(`${n.url}/v1/peer/blobs/${h}/data`, { ...auth, range: last });
    expect(now.status).toBe(404);
    expect(now.json()).toMatchObject({ fetching: true, complete: false });
    const later = await get(`${n.url}/v1/peer/blobs/${h}/data?wait=30000`, { ...auth, range: last });
    expect(later.status).toBe(206);
    expect(later.body.equals(content.subarray(7 * MiB))).toBe(true);
    await pulling;
    const done = await get(`${n.url}/v1/peer/blobs/${h}`, auth);
    expect(done.json()).toMatchObject({ complete: true, fetching: false });
  });

  it('answers 503 with Retry-After past its upload concurrency', async () => {
    const n = await node({ uploadConcurrency: 1, uploadMaxRate: 256 * 1024 });
    const content = makeContent(2 * MiB, 4);
    const h = await putBlob(n, content);
    const slow = request(`${n.url}/v1/peer/blobs/${h}/data`, { headers: { ...auth, range: 'bytes=0-1048575' } });
    const first = await slow;
    expect(first.statusCode).toBe(206);
    const busy = await get(`${n.url}/v1/peer/blobs/${h}/data`, { ...auth, range: 'bytes=0-9' });
    expect(busy.status).toBe(503);
    expect(busy.headers['retry-after']).toBe('1');
    const body = Buffer.from(await first.body.arrayBuffer());
    expect(body.equals(content.subarray(0, MiB))).toBe(true);
    expect(n.p2p!.counters.uploadsRejected).toBe(1);
    // The slot is free again.
    const again = await get(`${n.url}/v1/peer/blobs/${h}/data`, { ...auth, range: 'bytes=0-9' });
    expect(again.status).toBe(206);
  });

  it('relays what an asker says it holds (the view header) to later askers, and ignores a malformed one', async () => {
    const n = await node();
    const h = sha256(makeContent(1000, 5));
    const view = { complete: false, ranges: [[0, MiB]], inflight: [[MiB, 2 * MiB]] };
    const asker = { ...auth, 'x-swift-fetch-node': 'asker-1', 'x-swift-fetch-fetching': '1' };
    expect((await get(`${n.url}/v1/peer/blobs/${h}`, { ...asker, 'x-swift-fetch-view': JSON.stringify(view) })).status).toBe(404);
    await get(`${n.url}/v1/peer/blobs/${h}`, { ...asker, 'x-swift-fetch-node': 'asker-2', 'x-swift-fetch-view': '{"complete":false,"ranges":[[5,1]]}' });
    await get(`${n.url}/v1/peer/blobs/${h}`, { ...asker, 'x-swift-fetch-node': 'asker-3', 'x-swift-fetch-view': 'x'.repeat(5000) });
    const later = (await get(`${n.url}/v1/peer/blobs/${h}`, { ...auth, 'x-swift-fetch-node': 'asker-4' })).json() as { interested: string[]; peers: Array<Record<string, unknown>> };
    expect(later.interested.sort()).toEqual(['asker-1', 'asker-2', 'asker-3']);
    expect(later.peers).toEqual([{ nodeId: 'asker-1', fetching: true, ...view }]);
  });

  it('ends an upload whose peer takes nothing for 10 s, freeing its slot', async () => {
    const n = await node({ uploadConcurrency: 1 });
    const content = makeContent(32 * MiB, 6);
    const h = await putBlob(n, content);
    // A downloader that sends its request and then never reads (a partitioned peer, as far as the
    // server can tell): the socket buffers fill and the upload blocks.
    const { port, hostname } = new URL(n.url);
    const sock = connect(Number(port), hostname);
    sock.pause();
    sock.write(`GET /v1/peer/blobs/${h}/data HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\nrange: bytes=0-${content.length - 1}\r\n\r\n`);
    try {
      const t0 = Date.now();
      for (;;) {
        await new Promise((r) => setTimeout(r, 250));
        if (n.p2p!.counters.uploads === 1) break;
      }
      expect((await get(`${n.url}/v1/peer/blobs/${h}/data`, { ...auth, range: 'bytes=0-9' })).status).toBe(503);
      let status = 503;
      while (status === 503 && Date.now() - t0 < 30_000) status = (await get(`${n.url}/v1/peer/blobs/${h}/data`, { ...auth, range: 'bytes=0-9' })).status;
      expect(status).toBe(206);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(9_000);
    } finally {
      sock.destroy();
    }
  }, 60_000);
});
