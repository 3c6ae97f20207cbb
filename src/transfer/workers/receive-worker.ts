/**
 * The receive worker's code: a worker thread that owns its own HTTP connections, asks one final
 * URL for one byte range, and writes the body straight into the partial file's fd (positional
 * writes; fds are shared by every thread of the process). It reports each write to the main
 * thread, which credits blocks, records them in the resume database and keeps every decision.
 *
 * What it never does: follow a redirect, re-sign a URL, add a header, retry, or accept anything
 * but a 206 for exactly the asked start. Anything else is "refused" and the main thread redoes
 * that attempt itself (src/transfer/http.ts), so token handling and error mapping stay in one place.
 *
 * An eval'ed CommonJS string, like the hash worker, so it loads the same way from `src/` under
 * vitest and from `dist/`; undici is required by the absolute path the main thread resolved.
 *
 * Messages in:  {op:'get', id, url, headers, fd, pos, end, size, limited}, {op:'abort', id},
 *               {op:'shrink', id, end}, {op:'grant', id}
 * Messages out: {id, kind:'written', start, len}, {id, kind:'alive'}, {id, kind:'take', n},
 *               {id, kind:'done', refused?: status, error?: {message, code, io}}
 */
export const RECEIVE_WORKER_SOURCE = `
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
// Bytes per positional write. 128-512 KiB cost the same CPU (docs/benchmarks.md); the smaller
// batch keeps the reused batches (raw) and queued pieces (undici, http) small.
const WRITE_BUFFER = 128 * 1024;
// Received but unwritten bytes past which the socket is not read until the disk catches up (one
// batch filling while the previous one is written: more only raised peak RSS, no speed).
const HIGH_WATER = WRITE_BUFFER;
// A stalled-looking task gets a sign of life at most this often (the main thread's stall clock).
const ALIVE_MS = 50;
const impl = workerData.impl;
let agent;
let undiciAgent;
// undici, loaded on first use: the 'raw' client takes it only for https.
function undici() {
  if (!undiciAgent) {
    const { Agent } = require(workerData.undiciPath);
    undiciAgent = new Agent({
      connections: workerData.connections, pipelining: 1, keepAliveTimeout: 30000, keepAliveMaxTimeout: 600000,
      headersTimeout: 0, bodyTimeout: 0,
    });
  }
  return undiciAgent;
}
if (impl === 'http') {
  const http = require('node:http');
  const https = require('node:https');
  agent = {
    'http:': new http.Agent({ keepAlive: true, maxSockets: workerData.connections }),
    'https:': new https.Agent({ keepAlive: true, maxSockets: workerData.connections }),
    mod: { 'http:': http, 'https:': https },
  };
}
const tasks = new Map();

function parseContentRange(v) {
  const m = typeof v === 'string' ? /^\\s*bytes\\s+(\\d+)-(\\d+)\\/(\\d+|\\*)\\s*$/i.exec(v) : null;
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]) + 1, total: m[3] === '*' ? undefined : Number(m[3]) };
}

function post(t, msg) {
  msg.id = t.id;
  t.lastMsg = Date.now();
  parentPort.postMessage(msg);
}

function pauseFor(t, why) {
  t.paused[why] = true;
  if (t.ctl) t.ctl.pause();
}

function resumeFor(t, why) {
  t.paused[why] = false;
  if (!t.paused.disk && !t.paused.rate && t.ctl) t.ctl.resume();
}

function writeAll(fd, list, len, position, cb) {
  fs.writev(fd, list, position, (err, n) => {
    if (err) return cb(err);
    if (n >= len) return cb(null);
    // A short write (disk filling): plain writes for the rest report ENOSPC properly.
    const rest = Buffer.concat(list).subarray(n);
    let off = 0;
    const step = () => {
      if (off >= rest.length) return cb(null);
      fs.write(fd, rest, off, rest.length - off, position + n + off, (e, w) => {
        if (e) return cb(e);
        if (w === 0) return cb(Object.assign(new Error('no progress writing'), { code: 'EIO' }));
        off += w;
        step();
      });
    };
    step();
  });
}

function flush(t) {
  if (t.writing || t.pendLen === 0 || t.stopping || t.ioError) return;
  let list = t.pend;
  if (t.raw) {
    // The batch goes to the disk whole; the next bytes fill another one.
    list = [t.batch.subarray(0, t.pendLen)];
    t.writingBatch = t.batch;
    t.batch = undefined;
  }
  const start = t.pendStart;
  const len = t.pendLen;
  t.pend = [];
  t.pendStart += len;
  t.pendLen = 0;
  t.writing = true;
  writeAll(t.fd, list, len, start, (err) => {
    t.writing = false;
    if (t.writingBatch) {
      spare.push(t.writingBatch);
      t.writingBatch = undefined;
    }
    if (err) {
      t.ioError = err;
      if (t.ctl) t.ctl.abort(err);
    } else {
      post(t, { kind: 'written', start, len });
    }
    if (t.pendLen >= WRITE_BUFFER || ((t.ended || t.netError || t.full) && t.pendLen > 0)) flush(t);
    if (t.pendLen < HIGH_WATER) resumeFor(t, 'disk');
    maybeFinish(t);
  });
}

function maybeFinish(t) {
  if (t.finished || t.writing) return;
  if (t.errBody !== undefined && !t.ended && !t.netError && !t.stopping) return;
  const over = t.stopping || t.ioError || t.refused !== undefined;
  if (!over && !((t.ended || t.netError || t.full) && t.pendLen === 0)) return;
  t.finished = true;
  tasks.delete(t.id);
  const msg = { kind: 'done' };
  if (t.refused !== undefined) {
    msg.refused = t.refused;
    msg.headers = t.refusedHeaders;
    msg.body = t.errBody;
  }
  // A range received in full is done, whatever the connection does after (a shrunk range closes it).
  const e = t.ioError || (t.stopping || t.full || t.refused !== undefined ? undefined : t.netError);
  if (e) msg.error = { message: String(e.message || e), code: e.code, io: e === t.ioError };
  if (!t.ended && !t.netError && t.ctl) t.ctl.abort(new Error('range done'));
  post(t, msg);
}

function onHeaders(t, status, headers) {
  const cr = status === 206 ? parseContentRange(headers['content-range']) : undefined;
  if (!cr || cr.start !== t.pos || (cr.total !== undefined && cr.total !== t.size)) {
    t.refused = status;
    t.refusedHeaders = headers;
    if (status >= 400) {
      // The main thread turns an error status into the same error the main path gives: it needs
      // the error headers and the start of the body. Read them (small) before reporting.
      t.errBody = '';
      return true;
    }
    maybeFinish(t);
    return false;
  }
  post(t, { kind: 'alive' });
  return true;
}

function onData(t, chunk) {
  if (t.errBody !== undefined) {
    if (t.errBody.length < 2048) t.errBody += Buffer.from(chunk).toString('utf8');
    return;
  }
  if (t.finished || t.stopping || t.refused !== undefined) return;
  const n = Math.min(chunk.length, t.end - t.pos);
  if (n > 0) {
    if (t.raw) {
      // The socket reads into one reused buffer: copy into this task's batch.
      if (!t.batch) t.batch = spare.pop() || Buffer.allocUnsafe(BATCH_CAP);
      if (t.pendLen + n > t.batch.length) {
        onEnd(t, Object.assign(new Error('receive batch overflow'), { code: 'ECONNRESET' }));
        if (t.ctl) t.ctl.abort(new Error('overflow'));
        return;
      }
      chunk.copy(t.batch, t.pendLen, 0, n);
    } else {
      t.pend.push(n === chunk.length ? chunk : chunk.subarray(0, n));
    }
    t.pendLen += n;
    t.pos += n;
  }
  if (t.limited) {
    // Debt, as on the main thread: the bytes are taken after they arrived, and nothing more is
    // read until the main thread's token bucket has earned them.
    t.owed += chunk.length;
    if (!t.asking) askTokens(t);
  }
  if (t.pos >= t.end) {
    t.full = true;
    flush(t);
    maybeFinish(t);
    return;
  }
  if (t.pendLen >= WRITE_BUFFER) flush(t);
  if (t.pendLen >= HIGH_WATER) pauseFor(t, 'disk');
  if (Date.now() - t.lastMsg >= ALIVE_MS) post(t, { kind: 'alive' });
}

function askTokens(t) {
  t.asking = true;
  const n = t.owed;
  t.owed = 0;
  pauseFor(t, 'rate');
  post(t, { kind: 'take', n });
}

function onEnd(t, err) {
  if (t.finished) return;
  if (err) t.netError = err;
  else t.ended = true;
  flush(t);
  maybeFinish(t);
}

function startUndici(t, u, headers) {
  undici().dispatch(
    { origin: u.origin, path: u.pathname + u.search, method: 'GET', headers },
    {
      onRequestStart(ctl) {
        t.ctl = ctl;
        if (t.stopping) ctl.abort(new Error('aborted'));
      },
      onResponseStart(ctl, status, h) {
        t.ctl = ctl;
        onHeaders(t, status, h);
      },
      onResponseData(_ctl, chunk) {
        onData(t, chunk);
      },
      onResponseEnd() {
        onEnd(t);
      },
      onResponseError(_ctl, err) {
        onEnd(t, err);
      },
    },
  );
}

function startHttp(t, u, headers) {
  const mod = agent.mod[u.protocol];
  const req = mod.get(u, { agent: agent[u.protocol], headers }, (res) => {
    if (!onHeaders(t, res.statusCode, res.headers)) return res.resume();
    res.on('data', (c) => onData(t, c));
    res.on('end', () => onEnd(t));
    res.on('error', (e) => onEnd(t, e));
    res.on('aborted', () => onEnd(t, Object.assign(new Error('response aborted'), { code: 'ECONNRESET' })));
  });
  let res;
  req.on('response', (r) => (res = r));
  t.ctl = {
    pause: () => res && res.pause(),
    resume: () => res && res.resume(),
    abort: (e) => req.destroy(e),
  };
  req.on('error', (e) => onEnd(t, e));
}

// ---- raw: HTTP/1.1 over net.Socket with a reused read buffer (onread), for plain http only.
// Per read, undici and node:http allocate a fresh buffer that lives until a GC; here every socket
// reads into one 64 KiB buffer and the bytes are copied into a few reused write batches, so the
// thread allocates nothing per read (memory flat, no GC churn). Anything this small parser does
// not expect (https, chunked bodies, no Content-Length, 1xx) is refused: the main thread redoes it.
const net = require('node:net');
const BATCH_CAP = HIGH_WATER + 128 * 1024;
const spare = [];
const idle = new Map();

function release(s) {
  s.task = undefined;
  if (!s.keep || s.destroyed) return s.destroy();
  let list = idle.get(s.key);
  if (!list) idle.set(s.key, (list = []));
  if (list.length >= workerData.connections) return s.destroy();
  list.push(s);
}

function dropIdle(s) {
  const list = idle.get(s.key);
  const i = list ? list.indexOf(s) : -1;
  if (i >= 0) list.splice(i, 1);
}

function sockGone(s, err) {
  dropIdle(s);
  const t = s.task;
  s.task = undefined;
  if (t && !t.finished) onEnd(t, err || Object.assign(new Error('the connection closed mid-response'), { code: 'ECONNRESET' }));
}

function parseHead(text) {
  const lines = text.split('\\r\\n');
  const m = /^HTTP\\/1\\.([01]) (\\d{3})/.exec(lines[0]);
  if (!m) return undefined;
  const headers = {};
  for (let i = 1; i < lines.length; i++) {
    const c = lines[i].indexOf(':');
    if (c <= 0) continue;
    const k = lines[i].slice(0, c).trim().toLowerCase();
    const v = lines[i].slice(c + 1).trim();
    headers[k] = headers[k] === undefined ? v : [].concat(headers[k], v);
  }
  return { minor: Number(m[1]), status: Number(m[2]), headers };
}

function onSockRead(s, n, buf) {
  const t = s.task;
  if (!t) return void s.destroy(); // bytes nobody asked for: never reuse this connection
  const h = t.http;
  if (h.state === 'head') {
    h.head.push(Buffer.from(buf.subarray(0, n)));
    const all = h.head.length === 1 ? h.head[0] : Buffer.concat(h.head);
    h.head = [all];
    const idx = all.indexOf('\\r\\n\\r\\n');
    if (idx < 0) {
      if (all.length > 65536) sockFail(s, t, 'response head too large');
      return;
    }
    const head = parseHead(all.subarray(0, idx).toString('latin1'));
    if (!head) return sockFail(s, t, 'malformed response');
    h.state = 'body';
    h.head = undefined;
    const hd = head.headers;
    s.keep = head.minor === 1 && !/close/i.test(String(hd.connection || ''));
    const cl = typeof hd['content-length'] === 'string' && /^\\d+$/.test(hd['content-length']) ? Number(hd['content-length']) : undefined;
    if (head.status < 200 || hd['transfer-encoding'] !== undefined || cl === undefined) {
      // Framing this parser does not do: the main thread asks again.
      t.refused = head.status;
      t.refusedHeaders = hd;
      s.task = undefined;
      s.destroy();
      return void maybeFinish(t);
    }
    h.left = cl;
    onHeaders(t, head.status, hd);
    if (t.finished) {
      s.task = undefined;
      return void s.destroy();
    }
    const rest = all.subarray(idx + 4);
    // The first body bytes sit in a copy already: hand them on as they are.
    if (rest.length > 0 || h.left === 0) body(s, t, rest);
    return;
  }
  body(s, t, buf.subarray(0, n));
}

function body(s, t, b) {
  const h = t.http;
  const m = Math.min(b.length, h.left);
  h.left -= m;
  if (b.length > m) s.keep = false;
  const complete = h.left === 0;
  if (complete) {
    // Give the connection back before the last bytes are handled: nothing more will come.
    t.ctl = { pause() {}, resume() {}, abort() {} };
    release(s);
  }
  if (m > 0) onData(t, b.subarray(0, m));
  if (complete) onEnd(t);
}

function sockFail(s, t, why) {
  s.task = undefined;
  s.destroy();
  onEnd(t, Object.assign(new Error(why), { code: 'UND_ERR_SOCKET' }));
}

function startRaw(t, u, headers) {
  let req = 'GET ' + u.pathname + u.search + ' HTTP/1.1\\r\\nhost: ' + u.host + '\\r\\n';
  let unsafe = false;
  for (const k of Object.keys(headers)) {
    if (/[\\r\\n:]/.test(k) || /[\\r\\n]/.test(String(headers[k]))) unsafe = true;
    req += k + ': ' + headers[k] + '\\r\\n';
  }
  if (u.protocol === 'https:' && !unsafe) {
    // TLS sockets take no onread: https goes through undici, still in this thread.
    t.raw = false;
    return startUndici(t, u, headers);
  }
  if (u.protocol !== 'http:' || unsafe) {
    // A header that would split the request (undici refuses those too): the main thread decides.
    t.refused = 0;
    t.refusedHeaders = {};
    return void maybeFinish(t);
  }
  const key = u.host;
  const list = idle.get(key);
  let s = list && list.pop();
  if (!s) {
    const readBuf = Buffer.allocUnsafe(64 * 1024);
    s = net.connect({ host: u.hostname.replace(/^\\[|\\]$/g, ''), port: Number(u.port || 80), onread: { buffer: readBuf, callback: (n, buf) => onSockRead(s, n, buf) } });
    s.key = key;
    s.setNoDelay(true);
    const sock = s;
    s.on('error', (e) => sockGone(sock, e));
    s.on('close', () => sockGone(sock));
    s.on('end', () => sock.destroy());
  }
  s.task = t;
  t.http = { state: 'head', head: [], left: 0 };
  const sock = s;
  t.ctl = {
    pause: () => sock.pause(),
    resume: () => sock.resume(),
    abort: () => {
      if (sock.task === t) sock.task = undefined;
      sock.destroy();
    },
  };
  s.write(req + '\\r\\n');
}

parentPort.on('message', (m) => {
  if (m.op === 'get') {
    const t = {
      id: m.id, fd: m.fd, pos: m.pos, end: m.end, size: m.size, limited: m.limited,
      pend: [], pendStart: m.pos, pendLen: 0, writing: false, owed: 0, asking: false,
      paused: { disk: false, rate: false }, ctl: undefined, lastMsg: 0,
      ended: false, full: false, stopping: false, finished: false, netError: undefined, ioError: undefined, refused: undefined,
      refusedHeaders: undefined, errBody: undefined, raw: impl === 'raw', batch: undefined, writingBatch: undefined,
    };
    tasks.set(t.id, t);
    try {
      const u = new URL(m.url);
      if (impl === 'raw') startRaw(t, u, m.headers);
      else if (impl === 'http') startHttp(t, u, m.headers);
      else startUndici(t, u, m.headers);
    } catch (e) {
      onEnd(t, e);
    }
    return;
  }
  const t = tasks.get(m.id);
  if (!t) return;
  if (m.op === 'abort') {
    // Bytes not yet written are dropped: the main thread resumes from the last reported write.
    t.stopping = true;
    t.pend = [];
    t.pendLen = 0;
    if (t.batch) {
      spare.push(t.batch);
      t.batch = undefined;
    }
    if (t.ctl) t.ctl.abort(new Error('aborted'));
    maybeFinish(t);
  } else if (m.op === 'shrink') {
    // The main thread gave our tail to another connection (end game).
    if (m.end < t.end) {
      t.end = Math.max(m.end, t.pendStart);
      if (t.pos > t.end) {
        const over = t.pos - t.end;
        t.pos = t.end;
        let drop = over;
        if (t.raw) {
          t.pendLen = Math.max(0, t.pendLen - drop);
          drop = 0;
        }
        while (drop > 0 && t.pend.length > 0) {
          const last = t.pend[t.pend.length - 1];
          if (last.length <= drop) { t.pend.pop(); drop -= last.length; t.pendLen -= last.length; }
          else { t.pend[t.pend.length - 1] = last.subarray(0, last.length - drop); t.pendLen -= drop; drop = 0; }
        }
      }
      if (t.pos >= t.end) {
        t.full = true;
        flush(t);
        maybeFinish(t);
      }
    }
  } else if (m.op === 'grant') {
    t.asking = false;
    if (t.owed > 0) askTokens(t);
    else resumeFor(t, 'rate');
  }
});
`;
