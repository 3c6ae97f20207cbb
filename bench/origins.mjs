/**
 * The benchmark's origins: nginx (Debian's `nginx` package, `sendfile on`) started in a temporary
 * prefix on free loopback ports, or bench/origin.mjs (Node) when nginx is missing.
 *
 * nginx runs four servers in one instance (one worker process):
 *   - cdn-uncapped and cdn-capped (`limit_rate` per connection, like a CDN edge) serve the file at /file;
 *   - hub-uncapped and hub-capped answer the Hugging Face routes `hf download` and
 *     `swift-fetch pull hf://…` use: revision JSON, tree JSON, and `resolve` as HF does for an LFS
 *     file: a 302 to the CDN carrying X-Repo-Commit, X-Linked-Etag, X-Linked-Size and ETag.
 * The CDN is another port, so clients treat it as another host (no hub headers sent there).
 * Origin bytes come from nginx's access log (`$body_bytes_sent` of every request for /file).
 */
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const REPO = 'bench/model';
export const FILE_NAME = 'model.bin';
export const COMMIT = 'b'.repeat(40);
export const NGINX_INSTALL = 'apt-get install -y nginx   (Debian/Ubuntu package `nginx`; the bench starts its own instance, the system service is not used)';

export function findNginx() {
  for (const p of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx']) if (existsSync(p)) return p;
  try {
    return execFileSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** A TCP port on loopback that nobody listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function procCpu(pid) {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

function childPids(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The git blob id of the LFS pointer file, as the hub lists it in `oid`. */
function pointerOid(sha256, size) {
  const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`;
  return createHash('sha1').update(`blob ${Buffer.byteLength(pointer)}\0`).update(pointer).digest('hex');
}

export function hubJson(sha256, size) {
  const model = { id: REPO, modelId: REPO, sha: COMMIT, private: false, gated: false, disabled: false, siblings: [{ rfilename: FILE_NAME, size, lfs: { sha256, size, pointerSize: 134 } }] };
  const tree = [{ type: 'file', path: FILE_NAME, size, oid: pointerOid(sha256, size), lfs: { oid: sha256, size, pointerSize: 134 } }];
  return { model, tree };
}

function nginxConf({ prefix, www, file, ports, capRate, sha256, size }) {
  const cdn = (port, cap) => `
  server {
    listen 127.0.0.1:${port};
    ${cap ? `limit_rate ${Math.round(cap)};` : ''}
    location = /file { alias ${file}; default_type application/octet-stream; }
    location / { return 404; }
  }`;
  const hub = (port, cdnPort) => `
  server {
    listen 127.0.0.1:${port};
    root ${www};
    default_type application/json;
    location ~ ^/api/models/${REPO}(/revision/[^/]+)?$ { try_files /model.json =404; }
    location ~ ^/api/models/${REPO}/tree/ { try_files /tree.json =404; }
    location ~ ^/${REPO}/resolve/[^/]+/${FILE_NAME.replace('.', '\\.')}$ {
      add_header X-Repo-Commit ${COMMIT} always;
      add_header X-Linked-Etag '"${sha256}"' always;
      add_header X-Linked-Size ${size} always;
      add_header ETag '"${sha256}"' always;
      return 302 http://127.0.0.1:${cdnPort}/file;
    }
    location / { add_header X-Error-Code EntryNotFound always; return 404; }
  }`;
  return `# written by bench/origins.mjs
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 4096; }
http {
  log_format bytes '$server_port $status $body_bytes_sent $uri';
  access_log ${prefix}/access.log bytes;
  client_body_temp_path ${prefix}/tmp/body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 60s;
  keepalive_requests 100000;
  ${cdn(ports.cdnUncapped, 0)}
  ${cdn(ports.cdnCapped, capRate)}
  ${hub(ports.hubUncapped, ports.cdnUncapped)}
  ${hub(ports.hubCapped, ports.cdnCapped)}
}
`;
}

async function startNginx(bin, opts) {
  const prefix = mkdtempSync(join(tmpdir(), 'sf-bench-nginx-'));
  // nginx's workers drop to `nobody` when started as root: they must be able to read the prefix.
  chmodSync(prefix, 0o755);
  const www = join(prefix, 'www');
  mkdirSync(join(prefix, 'tmp'), { recursive: true });
  mkdirSync(www, { recursive: true });
  const { model, tree } = hubJson(opts.sha256, opts.size);
  writeFileSync(join(www, 'model.json'), JSON.stringify(model));
  writeFileSync(join(www, 'tree.json'), JSON.stringify(tree));
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const ports = { cdnUncapped: await freePort(), cdnCapped: await freePort(), hubUncapped: await freePort(), hubCapped: await freePort() };
    writeFileSync(join(prefix, 'nginx.conf'), nginxConf({ prefix, www, ports, ...opts }));
    try {
      execFileSync(bin, ['-p', prefix, '-c', join(prefix, 'nginx.conf'), '-e', join(prefix, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (e) {
      lastErr = e;
      continue;
    }
    const master = Number(readFileSync(join(prefix, 'nginx.pid'), 'utf8'));
    const log = join(prefix, 'access.log');
    let offset = 0;
    let bytes = 0;
    const readLog = () => {
      if (!existsSync(log)) return bytes;
      const size = statSync(log).size;
      if (size <= offset) return bytes;
      const fd = openSync(log, 'r');
      const buf = Buffer.alloc(size - offset);
      readSync(fd, buf, 0, buf.length, offset);
      closeSync(fd);
      const text = buf.toString('utf8');
      const end = text.lastIndexOf('\n') + 1;
      offset += Buffer.byteLength(text.slice(0, end));
      for (const line of text.slice(0, end).split('\n')) {
        const [, , sent, uri] = line.split(' ');
        if (uri === '/file') bytes += Number(sent);
      }
      return bytes;
    };
    const base = (p) => `http://127.0.0.1:${p}`;
    return {
      kind: 'nginx',
      label: `${bin} (${nginxVersion(bin)}, 1 worker, sendfile on, \`limit_rate ${Math.round(opts.capRate)}\` on the capped server)`,
      prefix,
      uncapped: { data: `${base(ports.cdnUncapped)}/file`, hub: base(ports.hubUncapped) },
      capped: { data: `${base(ports.cdnCapped)}/file`, hub: base(ports.hubCapped) },
      /** Body bytes of /file sent so far (all servers); nginx logs a request when it ends. */
      bytes: async () => readLog(),
      /** CPU seconds used by nginx's worker so far. */
      cpu: () => childPids(master).reduce((n, p) => n + procCpu(p), procCpu(master)),
      stop: () => {
        try {
          process.kill(master, 'SIGQUIT');
        } catch {}
        // nginx daemonizes: wait (bounded) until the master is gone, then remove the prefix.
        const pause = new Int32Array(new SharedArrayBuffer(4));
        for (let i = 0; i < 60; i++) {
          try {
            process.kill(master, 0);
          } catch {
            break;
          }
          Atomics.wait(pause, 0, 0, 50);
        }
        rmSync(prefix, { recursive: true, force: true });
      },
    };
  }
  rmSync(prefix, { recursive: true, force: true });
  throw new Error(`nginx did not start: ${lastErr?.stderr?.toString() ?? lastErr}`);
}

function nginxVersion(bin) {
  // nginx prints its version on stderr.
  const r = spawnSync(bin, ['-v'], { encoding: 'utf8' });
  return `${r.stderr ?? ''}${r.stdout ?? ''}`.trim().replace(/^nginx version: /, '') || 'nginx';
}

async function startNodeOrigin(root, file, sha256, rate) {
  const child = spawn(process.execPath, [join(root, 'bench/origin.mjs'), '--file', file, '--sha256', sha256, '--rate-per-conn', String(rate)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (c) => reject(new Error(`origin exited ${c}`)));
  });
  const { port } = JSON.parse(line);
  const base = `http://127.0.0.1:${port}`;
  return { child, base, stats: async () => (await (await fetch(`${base}/__stats`)).json()) };
}

/**
 * Start the origins. `prefer: 'nginx' | 'node'`. Returns the same shape either way; `kind` and
 * `label` say which one runs (the results name it).
 */
export async function startOrigins({ root, file, sha256, size, capRate, prefer = 'nginx' }) {
  const bin = prefer === 'nginx' ? findNginx() : undefined;
  if (bin) return startNginx(bin, { file, sha256, size, capRate });
  if (prefer === 'nginx') {
    process.stderr.write(`nginx not found; install it for the reference origin:\n  ${NGINX_INSTALL}\nfalling back to bench/origin.mjs (Node: it competes with the clients for the same cores).\n`);
  }
  const un = await startNodeOrigin(root, file, sha256, 0);
  const cap = await startNodeOrigin(root, file, sha256, capRate);
  return {
    kind: 'node',
    label: `bench/origin.mjs (Node ${process.version}; nginx missing: ${NGINX_INSTALL.split('   ')[0]})`,
    uncapped: { data: `${un.base}/file`, hub: un.base },
    capped: { data: `${cap.base}/file`, hub: cap.base },
    bytes: async () => (await un.stats()).bytes + (await cap.stats()).bytes,
    cpu: () => procCpu(un.child.pid) + procCpu(cap.child.pid),
    stop: () => {
      un.child.kill('SIGTERM');
      cap.child.kill('SIGTERM');
    },
  };
}
