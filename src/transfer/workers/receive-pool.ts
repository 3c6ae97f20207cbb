import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { RECEIVE_WORKER_SOURCE } from './receive-worker.js';
import { RetryableError } from '../../core/retry.js';
import { queuedWait } from '../../core/wakeups.js';

/** Which HTTP client the receive workers use (bench/run.mjs compares them). */
export type ReceiveImpl = 'undici' | 'http' | 'raw';

export interface ReceiveRequest {
  /** The final URL: the main thread resolved every redirect (the worker follows none). */
  url: string;
  /** Exactly the headers this URL may be sent (no hub token unless it is the hub's host). */
  headers: Record<string, string>;
  /** The partial file, open on the main thread for the whole task. */
  fd: number;
  pos: number;
  end: number;
  size: number;
}

export interface ReceiveHooks {
  /** `[start, start + len)` is written to the file. */
  written(start: number, len: number): void;
  /** Bytes are arriving (the stall clock). */
  alive(): void;
  /** The worker received `n` bytes and waits until the token bucket has earned them. */
  take?: (n: number) => Promise<void> | undefined;
}

/**
 * How a worker attempt ended without an error: done, or refused (not a 206 for our start) with
 * the status, headers and (for an error status) the start of the body.
 */
export type ReceiveOutcome = { refused?: { status: number; headers: Record<string, string | string[] | undefined>; body: string } };

/** Requests handed to receive threads in this process (tests check the thread path really ran). */
export const receiveStats = { requests: 0 };

/** A write in the worker failed (ENOSPC, EIO): the engine maps it to a StorageError. */
export class ReceiveIoError extends Error {
  constructor(message: string, readonly code: string | undefined) {
    super(message);
  }
}

interface WorkerMsg {
  id: number;
  kind: 'written' | 'alive' | 'take' | 'done';
  start?: number;
  len?: number;
  n?: number;
  refused?: number;
  headers?: Record<string, string | string[] | undefined>;
  body?: string;
  error?: { message: string; code?: string; io: boolean };
}

interface Running {
  hooks: ReceiveHooks;
  signal: AbortSignal;
  resolve: (o: ReceiveOutcome) => void;
  reject: (e: unknown) => void;
  slot: Slot;
  hookError?: unknown;
}

interface Slot {
  worker: Worker;
  active: number;
}

/**
 * Receive threads for the bulk path: each owns its own connections and writes bodies straight
 * into partial files, so the main thread only schedules, records blocks and hands out tokens.
 * Threads start on first use and stop with `close()`.
 *
 * Sockets: the threads together own `connections - 1`, the main thread keeps the rest for probes,
 * small files and whatever the threads refuse or have no free socket for; a thread is given a
 * task only when it has a free socket (no request ever queues inside a thread, where the main
 * thread's stall clock would be ticking). So a pull still opens no more sockets than asked for.
 */
export class ReceivePool {
  private readonly slots: Slot[] = [];
  private readonly running = new Map<number, Running>();
  private nextId = 1;
  private closed = false;
  /** Callers waiting for a thread socket to free up (FIFO). */
  private readonly slotWaiters: Array<() => void> = [];
  private readonly threads: number;
  private readonly perThread: number;

  constructor(threads: number, connections: number, private readonly impl: ReceiveImpl = 'raw') {
    this.threads = Math.max(0, Math.min(threads, connections - 1));
    this.perThread = this.threads === 0 ? 0 : Math.floor((connections - 1) / this.threads);
  }

  /** Whether any thread may be used at all (fewer than 2 connections: none). */
  get enabled(): boolean {
    return this.threads > 0;
  }

  private slot(): Slot | undefined {
    let best: Slot | undefined;
    for (const s of this.slots) if (s.active < this.perThread && (!best || s.active < best.active)) best = s;
    if (best && best.active === 0) return best;
    if (this.slots.length < this.threads) {
      const perThread = this.perThread;
      const undiciPath = createRequire(import.meta.url).resolve('undici');
      // Small heaps: the worker holds at most ~512 KiB of body per task; a big young generation
      // only raises peak RSS (docs/benchmarks.md, memory).
      const worker = new Worker(RECEIVE_WORKER_SOURCE, {
        eval: true,
        workerData: { undiciPath, connections: perThread, impl: this.impl },
        resourceLimits: { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 24 },
      });
      const s: Slot = { worker, active: 0 };
      worker.on('message', (m: WorkerMsg) => this.onMessage(m));
      worker.on('error', (e) => this.onWorkerError(s, e));
      worker.on('exit', (code) => this.onWorkerError(s, new Error(`receive worker exited (code ${code})`)));
      this.slots.push(s);
      return s;
    }
    return best;
  }

  /**
   * Receive `[pos, end)` of `url` into `fd`. Resolves when the worker is done with the fd (all
   * its writes settled); rejects with the signal's reason when aborted, with a ReceiveIoError
   * for a failed write, or with the network error (its `code` kept for the retry decision).
   * `shrink` moves the end earlier while running. Undefined when every thread's sockets are busy.
   */
  receive(req: ReceiveRequest, hooks: ReceiveHooks, signal: AbortSignal): { done: Promise<ReceiveOutcome>; shrink(end: number): void } | undefined {
    const id = this.nextId++;
    const slot = this.closed ? undefined : this.slot();
    if (!slot) return undefined;
    const done = new Promise<ReceiveOutcome>((resolve, reject) => {
      this.running.set(id, { hooks, signal, resolve, reject, slot });
    });
    slot.active++;
    receiveStats.requests++;
    slot.worker.postMessage({ op: 'get', id, ...req, limited: hooks.take !== undefined });
    // The worker answers an abort with 'done' once its last write settled: only then does the
    // promise settle, so the caller never closes an fd a write is still using.
    const onAbort = () => slot.worker.postMessage({ op: 'abort', id });
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    void done.finally(() => signal.removeEventListener('abort', onAbort)).catch(() => undefined);
    return { done, shrink: (end) => slot.worker.postMessage({ op: 'shrink', id, end }) };
  }

  private onMessage(m: WorkerMsg): void {
    const r = this.running.get(m.id);
    if (!r) return;
    try {
      if (m.kind === 'written') r.hooks.written(m.start!, m.len!);
      else if (m.kind === 'alive') r.hooks.alive();
      else if (m.kind === 'take') this.grant(m.id, r, m.n!);
      else this.finish(m.id, r, m);
    } catch (e) {
      // A hook threw (recording a block failed): stop the worker's task, report when it is done.
      r.hookError ??= e;
      r.slot.worker.postMessage({ op: 'abort', id: m.id });
    }
  }

  private grant(id: number, r: Running, n: number): void {
    const send = () => r.slot.worker.postMessage({ op: 'grant', id });
    const wait = r.hooks.take?.(n);
    if (!wait) send();
    // A rejected wait means the task is aborting; the abort message follows from the signal.
    else wait.then(send, () => undefined);
  }

  private settle(id: number, r: Running, how: () => void): void {
    this.running.delete(id);
    r.slot.active--;
    how();
    this.slotWaiters.shift()?.();
  }

  /** Resolves when a thread socket may have freed up (or at once when one is free now). */
  freeSlot(signal: AbortSignal): Promise<void> {
    if (this.closed || this.slots.length < this.threads || this.slots.some((s) => s.active < this.perThread)) return Promise.resolve();
    return queuedWait(this.slotWaiters, signal);
  }

  private finish(id: number, r: Running, m: WorkerMsg): void {
    this.settle(id, r, () => {
      if (r.hookError !== undefined) r.reject(r.hookError);
      else if (r.signal.aborted) r.reject(r.signal.reason);
      else if (m.error?.io) r.reject(new ReceiveIoError(m.error.message, m.error.code));
      else if (m.error) r.reject(Object.assign(new Error(m.error.message), { code: m.error.code }));
      else r.resolve(m.refused !== undefined ? { refused: { status: m.refused, headers: m.headers ?? {}, body: m.body ?? '' } } : {});
    });
  }

  private onWorkerError(s: Slot, e: unknown): void {
    const i = this.slots.indexOf(s);
    if (i < 0) return;
    this.slots.splice(i, 1);
    // A thread that died (out of its heap, a bug) costs its requests one retry each; the next
    // request starts a fresh thread.
    const err = new RetryableError(`a receive thread failed: ${(e as Error)?.message ?? String(e)}`, undefined, { cause: e });
    for (const [id, r] of this.running) if (r.slot === s) this.settle(id, r, () => r.reject(err));
  }

  async close(): Promise<void> {
    this.closed = true;
    const slots = this.slots.splice(0);
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}
