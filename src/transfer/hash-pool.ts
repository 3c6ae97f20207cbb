import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';

/**
 * Hashing off the event loop. Each job follows one partial file: the engine tells it how far the
 * contiguous, durable prefix reaches, and a worker thread reads those bytes back (from the page
 * cache, they were just written) and feeds SHA-256 (and git's blob SHA-1 when asked). Passing
 * offsets rather than buffers keeps the main thread free and memory flat.
 *
 * The worker is an eval'ed CommonJS string so it loads the same way from `src/` under tsx/vitest
 * and from `dist/`.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const crypto = require('node:crypto');
const jobs = new Map();
const buf = Buffer.allocUnsafe(1024 * 1024);
parentPort.on('message', (m) => {
  try {
    if (m.op === 'open') {
      const git = m.git ? crypto.createHash('sha1').update('blob ' + m.size + '\\0') : undefined;
      jobs.set(m.id, { fd: fs.openSync(m.path, 'r'), pos: 0, sha: crypto.createHash('sha256'), git });
      return;
    }
    const j = jobs.get(m.id);
    if (!j) {
      // A finish for a job dropped (aborted) a moment before still gets an answer: never leave a
      // caller waiting on a promise nobody will settle.
      if (m.op === 'finish') parentPort.postMessage({ id: m.id, error: 'the hash job was dropped' });
      return;
    }
    if (m.op === 'advance' || m.op === 'finish') {
      while (j.pos < m.upTo) {
        const want = Math.min(buf.length, m.upTo - j.pos);
        const n = fs.readSync(j.fd, buf, 0, want, j.pos);
        if (n === 0) throw new Error('partial file is shorter than its recorded chunks (' + j.pos + ' < ' + m.upTo + ')');
        const view = buf.subarray(0, n);
        j.sha.update(view);
        if (j.git) j.git.update(view);
        j.pos += n;
      }
      if (m.op === 'finish') {
        fs.closeSync(j.fd);
        jobs.delete(m.id);
        parentPort.postMessage({ id: m.id, sha256: j.sha.digest('hex'), gitOid: j.git ? j.git.digest('hex') : undefined });
      }
      return;
    }
    if (m.op === 'drop') {
      fs.closeSync(j.fd);
      jobs.delete(m.id);
    }
  } catch (e) {
    const j = jobs.get(m.id);
    if (j) { try { fs.closeSync(j.fd); } catch {} jobs.delete(m.id); }
    parentPort.postMessage({ id: m.id, error: String(e && e.message || e) });
  }
});
`;

interface Pending {
  resolve: (d: { sha256: string; gitOid?: string }) => void;
  reject: (e: Error) => void;
}

export interface HashJob {
  /** Hash up to `upTo` (bytes from the start) in the background. Never goes backwards. */
  advance(upTo: number): void;
  /** Hash up to `size` and return the digests. */
  finish(size: number): Promise<{ sha256: string; gitOid?: string }>;
  /** Abandon the job (file reset or aborted). */
  drop(): void;
}

export class HashPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly failed = new Map<number, Error>();
  private nextId = 1;
  private rr = 0;

  constructor(private readonly size = Math.max(1, Math.min(4, availableParallelism() - 1))) {}

  private worker(): Worker {
    if (this.workers.length < this.size) {
      // The worker only streams file bytes through a hash: a small heap keeps peak RSS down.
      const w = new Worker(WORKER_SOURCE, { eval: true, resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 16 } });
      w.on('message', (m: { id: number; sha256?: string; gitOid?: string; error?: string }) => {
        const p = this.pending.get(m.id);
        if (m.error !== undefined) {
          const err = new Error(`hashing failed: ${m.error}`);
          if (p) {
            this.pending.delete(m.id);
            p.reject(err);
          } else {
            this.failed.set(m.id, err);
          }
          return;
        }
        if (p) {
          this.pending.delete(m.id);
          p.resolve(m.gitOid ? { sha256: m.sha256!, gitOid: m.gitOid } : { sha256: m.sha256! });
        }
      });
      w.on('error', (e) => {
        for (const p of this.pending.values()) p.reject(e);
        this.pending.clear();
      });
      this.workers.push(w);
      return w;
    }
    return this.workers[this.rr++ % this.workers.length]!;
  }

  open(path: string, size: number, withGit: boolean): HashJob {
    const id = this.nextId++;
    const w = this.worker();
    w.postMessage({ op: 'open', id, path, size, git: withGit });
    let sent = 0;
    let done = false;
    let dropped = false;
    return {
      advance: (upTo) => {
        if (done || upTo <= sent) return;
        sent = upTo;
        w.postMessage({ op: 'advance', id, upTo });
      },
      finish: (size) => {
        // After an abort dropped the job, a write landing late can still complete the file.
        if (dropped) return Promise.reject(new Error('hashing failed: the transfer was stopped'));
        done = true;
        const early = this.failed.get(id);
        if (early) {
          this.failed.delete(id);
          return Promise.reject(early);
        }
        return new Promise((resolve, reject) => {
          this.pending.set(id, { resolve, reject });
          w.postMessage({ op: 'finish', id, upTo: size });
        });
      },
      drop: () => {
        if (done) return;
        done = true;
        dropped = true;
        this.failed.delete(id);
        w.postMessage({ op: 'drop', id });
      },
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.splice(0).map((w) => w.terminate()));
  }
}
