/**
 * A hostile HTTP server for tests: a real `http.createServer().listen(0)` on loopback whose
 * handler is scripted per test, with helpers for the answers that used to hurt (bodies without
 * end, endless pagination). It counts what it managed to send, so a test can show the client
 * stopped reading, not just that it gave up.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HostileServer {
  url: string;
  /** Requests seen, in order (method and URL). */
  requests: Array<{ method: string; url: string; headers: IncomingMessage['headers'] }>;
  close(): Promise<void>;
}

export async function startHostileServer(handler: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>, host = '127.0.0.1'): Promise<HostileServer> {
  const requests: HostileServer['requests'] = [];
  const server: Server = createServer((req, res) => {
    requests.push({ method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers });
    Promise.resolve(handler(req, res)).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, host, () => resolve()));
  const url = `http://${host}:${(server.address() as AddressInfo).port}`;
  return {
    url,
    requests,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * Answer 200 with `prefix` and then `filler` repeated until the client hangs up (or `maxBytes`,
 * a safety net for the test machine). Resolves with the bytes written.
 */
export function streamWithoutEnd(res: ServerResponse, prefix: string, filler: string, maxBytes = 2 * 1024 ** 3): Promise<number> {
  res.writeHead(200, { 'content-type': 'application/json' });
  const chunk = Buffer.from(filler.repeat(Math.max(1, Math.floor((256 * 1024) / filler.length))));
  let sent = 0;
  return new Promise((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      resolve(sent);
    };
    res.on('close', finish);
    const pump = () => {
      while (!done && !res.destroyed && sent < maxBytes) {
        const ok = res.write(sent === 0 ? Buffer.concat([Buffer.from(prefix), chunk]) : chunk);
        sent += chunk.length + (sent === 0 ? prefix.length : 0);
        if (!ok) return void res.once('drain', pump);
      }
      if (sent >= maxBytes) {
        res.end();
        finish();
      }
    };
    pump();
  });
}
