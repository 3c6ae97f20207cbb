import { afterEach, describe, expect, it } from 'vitest';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { fetchBlobs } from '../../src/transfer/index.js';
import { MiB, blobRequest, makeContent, serveRange, sha256, startServer, tempDir, type TestServer } from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A real forward proxy: CONNECT tunnels and absolute-URI requests, logging each target host. */
async function startProxy(): Promise<{ url: string; targets: string[] }> {
  const targets: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    // Absolute-form: GET http://host:port/path
    const target = new URL(req.url!);
    targets.push(target.host);
    const up = httpRequest(
      { host: target.hostname, port: target.port, path: target.pathname + target.search, method: req.method, headers: req.headers },
      (upRes) => {
        res.writeHead(upRes.statusCode!, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connect', (req, client: Socket, head) => {
    targets.push(req.url!);
    const [host, port] = req.url!.split(':');
    const up = connect(Number(port), host!, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) up.write(head);
      up.pipe(client);
      client.pipe(up);
    });
    sockets.add(up);
    sockets.add(client);
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, targets };
}

async function hubAndCdn(content: Buffer): Promise<{ hub: TestServer; cdn: TestServer }> {
  const cdn: TestServer = await startServer((req, res) => serveRange(cdn, req, res, content), '127.0.0.2');
  const hub: TestServer = await startServer((req, res) => {
    res.writeHead(302, { location: `${cdn.url}/blob?sig=1`, 'x-linked-etag': `"${sha256(content)}"`, 'x-linked-size': String(content.length) });
    res.end();
  });
  cleanups.push(() => hub.close(), () => cdn.close());
  return { hub, cdn };
}

function dirs() {
  const t = tempDir();
  cleanups.push(t.cleanup);
  return { partialDir: join(t.dir, 'partial'), stateDir: join(t.dir, 'state') };
}

describe('proxies', () => {
  it('sends hub and CDN traffic through HTTP_PROXY', async () => {
    const content = makeContent(3 * MiB, 51);
    const { hub, cdn } = await hubAndCdn(content);
    const proxy = await startProxy();
    const [got] = await fetchBlobs([blobRequest(content, `${hub.url}/m/resolve/c/f`)], { ...dirs(), chunkSize: MiB, env: { HTTP_PROXY: proxy.url } });
    expect(got!.sha256).toBe(sha256(content));
    expect(proxy.targets).toContain(hub.host);
    expect(proxy.targets).toContain(cdn.host);
    // Every request the origins saw came through the proxy's sockets.
    expect(cdn.requests.length).toBeGreaterThan(0);
  });

  it('NO_PROXY bypasses the proxy for the listed host only', async () => {
    const content = makeContent(3 * MiB, 52);
    const { hub, cdn } = await hubAndCdn(content);
    const proxy = await startProxy();
    const [got] = await fetchBlobs([blobRequest(content, `${hub.url}/m/resolve/c/f`)], {
      ...dirs(),
      chunkSize: MiB,
      env: { https_proxy: proxy.url, HTTP_PROXY: proxy.url, NO_PROXY: 'localhost,127.0.0.2' },
    });
    expect(got!.sha256).toBe(sha256(content));
    expect(proxy.targets).toContain(hub.host);
    expect(proxy.targets).not.toContain(cdn.host);
    expect(cdn.requests.length).toBeGreaterThan(0);
  });

  it('no proxy variables: direct connections', async () => {
    const content = makeContent(100_000, 53);
    const { hub } = await hubAndCdn(content);
    const proxy = await startProxy();
    await fetchBlobs([blobRequest(content, `${hub.url}/f`)], { ...dirs(), env: {} });
    expect(proxy.targets).toEqual([]);
  });
});
