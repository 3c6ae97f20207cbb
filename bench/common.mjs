/** Helpers the benchmark scripts share (run.mjs, mirror.mjs, p2p.mjs, ...). */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const MB = 1e6;

/** Random bytes of `size` generated once into `cache/data-<size>.bin`, with their SHA-256. */
export function ensureFile(cache, size) {
  mkdirSync(cache, { recursive: true });
  const file = join(cache, `data-${size}.bin`);
  const shaFile = `${file}.sha256`;
  if (existsSync(file) && existsSync(shaFile) && statSync(file).size === size) return { file, sha256: readFileSync(shaFile, 'utf8').trim() };
  process.stderr.write(`generating ${(size / MB).toFixed(0)} MB test file in ${file} (once)...\n`);
  const h = createHash('sha256');
  const fd = openSync(file, 'w');
  for (let off = 0; off < size; ) {
    const n = Math.min(16 * 1024 * 1024, size - off);
    const b = randomBytes(n);
    h.update(b);
    writeSync(fd, b);
    off += n;
  }
  closeSync(fd);
  const sha256 = h.digest('hex');
  writeFileSync(shaFile, sha256);
  return { file, sha256 };
}

export const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

export function syncDisks() {
  try {
    execFileSync('sync');
  } catch {}
}

/** nginx logs a request when it ends (an aborted one when it notices): wait until the count settles. */
export async function settledBytes(origin) {
  let last = await origin.bytes();
  for (let same = 0, i = 0; same < 3 && i < 50; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const b = await origin.bytes();
    same = b === last ? same + 1 : 0;
    last = b;
  }
  return last;
}

/**
 * A P2P node process (bench/p2p-node.mjs) driven over NDJSON: `next()` resolves with its next
 * message, `send(m)` writes one. Used by p2p.mjs and p2p-scale.mjs.
 */
export function startP2PNode(opts) {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'p2p-node.mjs');
  const child = spawn(process.execPath, [script, JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const queue = [];
  const waiters = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    let m;
    try { m = JSON.parse(l); } catch { return; }
    const w = waiters.shift();
    if (w) w(m); else queue.push(m);
  });
  const next = () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r)));
  const send = (m) => child.stdin.write(JSON.stringify(m) + '\n');
  return { child, next, send };
}
