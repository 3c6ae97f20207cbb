/**
 * The daemon client and the SSE format it shares with the server: the parser against the WHATWG
 * rules, the client reading a real HTTP stream whose chunks split a multi-byte character and a
 * CRLF, and how a daemon-reported failure becomes an exit code.
 */
import { createServer, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { daemonFailure, DaemonClient, EventsUnavailable } from '../../src/daemon/client.js';
import type { ModelView } from '../../src/daemon/routes.js';
import { BearerToken } from '../../src/http/bearer.js';
import { formatEvent, SseParser } from '../../src/daemon/sse.js';

const enc = (s: string) => Buffer.from(s, 'utf8');

/** Feed `bytes` one byte at a time: the harshest chunking a network can do. */
function byteByByte(bytes: Buffer): Array<{ event: string; data: string; id: string }> {
  const p = new SseParser();
  const out = [];
  for (const b of bytes) out.push(...p.push(Uint8Array.of(b)));
  out.push(...p.end());
  return out;
}

describe('SseParser', () => {
  it('reads events, names, ids, multi-line data and comments, with LF, CR or CRLF line ends', () => {
    const text = ': hello\n\nretry: 2000\nevent: progress\ndata: {"a":1}\n\nid: 7\r\ndata: line one\r\ndata:line two\r\n\r\ndata: cr only\r\rdata: unterminated';
    const events = byteByByte(enc(text));
    expect(events).toEqual([
      { event: 'progress', data: '{"a":1}', id: '' },
      { event: 'message', data: 'line one\nline two', id: '7' },
      { event: 'message', data: 'cr only', id: '7' },
    ]);
  });

  it('keeps a multi-byte character that a chunk boundary cuts in two', () => {
    const data = JSON.stringify({ error: '模型文件 权重/分片-00001.safetensors 缺失' });
    const bytes = enc(formatEvent('failed', data));
    for (let cut = 1; cut < bytes.length; cut++) {
      const p = new SseParser();
      const got = [...p.push(bytes.subarray(0, cut)), ...p.push(bytes.subarray(cut)), ...p.end()];
      expect(got, `cut at byte ${cut}`).toEqual([{ event: 'failed', data, id: '' }]);
    }
  });

  it('formats what it parses, also data with line breaks', () => {
    const data = 'a\nb\r\nc';
    expect(byteByByte(enc(formatEvent('x', data)))).toEqual([{ event: 'x', data: 'a\nb\nc', id: '' }]);
  });
});

describe('DaemonClient.events over a real HTTP stream', () => {
  let server: Server | undefined;
  afterEach(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = undefined;
  });

  async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
    server = createServer(handler);
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  }

  it('decodes a character split across two network writes', async () => {
    const model = { ref: 'ms://org/模型@master', state: 'failed', error: '文件 权重.safetensors 缺失', exitCode: 3, errorCode: 'ESF_NOT_FOUND' };
    const bytes = enc(`retry: 2000\r\n\r\n${formatEvent('progress', JSON.stringify({ ...model, state: 'downloading' })).replaceAll('\n', '\r\n')}${formatEvent('failed', JSON.stringify(model))}`);
    // Cut inside a 3-byte character of the second event, and between a CR and its LF.
    const cjk = bytes.lastIndexOf(enc('权')) + 1;
    const crlf = bytes.indexOf(enc('\r\n\r\n'), 10) + 1;
    const base = await serve((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.flushHeaders();
      const parts = [bytes.subarray(0, crlf), bytes.subarray(crlf, cjk), bytes.subarray(cjk)];
      const next = () => {
        const part = parts.shift();
        if (!part) return res.end();
        res.write(part);
        setTimeout(next, 30); // separate writes arrive as separate chunks
      };
      next();
    });
    const client = new DaemonClient(base);
    try {
      const got = [];
      for await (const e of client.events('ms://org/x@master', 'ready')) got.push(e);
      expect(got.map((e) => e.event)).toEqual(['progress', 'failed']);
      expect(got[1]!.model).toEqual(model);
    } finally {
      await client.close();
    }
  });

  it('says when the route does not stream, with the status', async () => {
    const base = await serve((req, res) => {
      if (req.url!.includes('json')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end('{}');
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":"not found"}');
    });
    const client = new DaemonClient(base);
    try {
      const first = async (key: string) => {
        for await (const e of client.events(key)) return e;
        return undefined;
      };
      await expect(first('hf://o/n@main')).rejects.toMatchObject({ constructor: EventsUnavailable, status: 404 });
      await expect(first('hf://o/json@main')).rejects.toMatchObject({ constructor: EventsUnavailable, status: 200 });
    } finally {
      await client.close();
    }
  });
});

describe('DaemonClient against a daemon that guards its API', () => {
  let server: Server | undefined;
  afterEach(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = undefined;
  });

  it('waits out 429 as Retry-After says, sends its token every time, and takes 401/403 as an auth failure (exit 4)', async () => {
    const seen: Array<{ at: number; auth: string | undefined; path: string }> = [];
    let busy = 2;
    server = createServer((req, res) => {
      seen.push({ at: Date.now(), auth: req.headers.authorization, path: req.url! });
      const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(JSON.stringify(body));
      };
      if (req.url!.includes('forbidden')) return send(403, { error: 'loopback only' });
      if (req.headers.authorization !== 'Bearer right') return send(401, { error: 'the API token was not accepted' });
      if (busy-- > 0) return send(429, { error: 'too many requests' }, { 'retry-after': '1' });
      send(202, { ref: 'hf://o/n@main', state: 'pending' });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const right = new DaemonClient(base, { token: BearerToken.fromValue('right') });
    const wrong = new DaemonClient(base, { token: BearerToken.fromValue('wrong') });
    try {
      const got = await right.pull({ ref: 'hf://o/n' });
      expect(got).toMatchObject({ state: 'pending' });
      expect(seen).toHaveLength(3);
      expect(seen.every((s) => s.auth === 'Bearer right')).toBe(true);
      // Each retry came no sooner than the second the daemon asked for.
      expect(seen[1]!.at - seen[0]!.at).toBeGreaterThanOrEqual(990);
      expect(seen[2]!.at - seen[1]!.at).toBeGreaterThanOrEqual(990);
      await expect(wrong.pull({ ref: 'hf://o/n' })).rejects.toMatchObject({ exitCode: 4, code: 'ESF_DAEMON_AUTH', message: expect.stringMatching(/refused the request \(401: the API token was not accepted\)/) });
      await expect(right.model('hf://o/forbidden@main')).rejects.toMatchObject({ exitCode: 4, message: expect.stringMatching(/403: loopback only.*no api\.tokenFile/) });
      const events = async () => {
        for await (const e of wrong.events('hf://o/n@main')) return e;
        return undefined;
      };
      await expect(events()).rejects.toMatchObject({ exitCode: 4 });
    } finally {
      await right.close();
      await wrong.close();
    }
  });
});

describe('daemonFailure', () => {
  const failed = (extra: Partial<ModelView>): ModelView => ({
    ref: 'hf://o/n@main', commit: null, state: 'failed', bytesDone: 0, bytesTotal: 0, path: null, error: 'no space left on device', exitCode: null, errorCode: null,
    declared: false, attempts: 1, nextRetryAt: null, waitingFor: null, updatedAt: new Date(0).toISOString(), ...extra,
  });

  it('is the exit code the daemon sent, whatever the error code is named', () => {
    for (const [errorCode, exitCode] of [['ESF_NO_SPACE', 6], ['ESF_NOT_FOUND', 3], ['ESF_BAD_RESPONSE', 7], ['ESF_UNSAFE_PATH', 2], ['ESF_NEW_KIND', 5]] as const) {
      const e = daemonFailure(failed({ errorCode, exitCode }), 'hf://o/n@main');
      expect(e, errorCode).toMatchObject({ exitCode, code: errorCode });
      expect(e!.message).toBe('hf://o/n@main: the daemon failed to pull it: no space left on device');
    }
  });

  it('is no guess when the daemon sent no usable exit code', () => {
    expect(daemonFailure(failed({ errorCode: 'ESF_NO_SPACE' }), 'x')).toBeUndefined();
    expect(daemonFailure(failed({ errorCode: 'ESF_NOT_FOUND', exitCode: 0 }), 'x')).toBeUndefined();
    expect(daemonFailure(failed({ exitCode: 2.5 }), 'x')).toBeUndefined();
  });
});
