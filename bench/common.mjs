/** Helpers the benchmark scripts share (run.mjs, mirror.mjs). */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

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
