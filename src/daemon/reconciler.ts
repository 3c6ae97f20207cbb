/**
 * Desired state (declared models + API requests) against actual state (what pulls achieved).
 * Each model is pulled by the injected pull function with bounded concurrency; a failure is never
 * final: it is retried with capped, jittered exponential backoff, more slowly when the hub said
 * "not found" or "not allowed" (someone has to fix a token or a name, hammering will not help).
 * Ready models are re-synced now and then, so a branch that moved on the hub is followed.
 */
import { EventEmitter } from 'node:events';
import pLimit from 'p-limit';
import type { Logger } from 'pino';
import { ExitCode, isSwiftFetchError } from '../core/errors.js';
import { repoKey, type ModelRef } from '../core/ref.js';
import { backoffDelay, type BackoffPolicy } from '../core/retry.js';
import type { ByteSource } from '../core/transfer.js';
import type { PullEvent, PullOptions, PullResult } from '../pull/index.js';
import { revisionKey } from '../store/gc.js';
import type { ModelSpec } from './config.js';

export const MODEL_STATES = ['pending', 'downloading', 'verifying', 'ready', 'failed'] as const;
export type ModelState = (typeof MODEL_STATES)[number];

/** What `GET /v1/models` returns for each model. */
export interface ModelStatus {
  ref: string;
  commit: string | null;
  state: ModelState;
  bytesDone: number;
  bytesTotal: number;
  path: string | null;
  error: string | null;
  /** Exit code and stable error code of the last failure (init maps them to its own exit code). */
  exitCode: number | null;
  errorCode: string | null;
  /** Declared in the config or the models file (pinned against GC). */
  declared: boolean;
  /** Failed attempts since the last success. */
  attempts: number;
  /** When the next retry of a failed model is due (ISO time). */
  nextRetryAt: string | null;
  /** Holder of the download lease when another process is downloading this model for us. */
  waitingFor: string | null;
  updatedAt: string;
}

export type PullFn = (ref: ModelRef, opts: PullOptions) => Promise<Pick<PullResult, 'commit' | 'path' | 'bytesDownloaded' | 'alreadyComplete'>>;

/**
 * The reconciler's retry schedule: the shared backoff policy (core/retry.ts), plus a slow lane for
 * failures that only a person can fix (a wrong name, a missing token).
 */
export interface BackoffOptions extends BackoffPolicy {
  /** For not-found and auth failures. */
  slowBaseMs: number;
  slowMaxMs: number;
}

export const RECONCILER_BACKOFF: BackoffOptions = { baseMs: 5_000, maxMs: 5 * 60_000, slowBaseMs: 60_000, slowMaxMs: 30 * 60_000 };

/** Delay before retry number `attempts` (1-based): the shared backoff, in the slow lane when no retry soon can help. */
export function retryDelay(attempts: number, error: unknown, b: BackoffOptions = RECONCILER_BACKOFF, random = Math.random): number {
  const slow = isSwiftFetchError(error) && (error.exitCode === ExitCode.notFound || error.exitCode === ExitCode.auth);
  return backoffDelay(attempts, slow ? { baseMs: b.slowBaseMs, maxMs: b.slowMaxMs } : b, undefined, random);
}

export interface ReconcilerOptions {
  pull: PullFn;
  /** Options shared by every pull (store, stateDir, limiter, connections, …). */
  pullOptions: () => Omit<PullOptions, 'include' | 'exclude' | 'signal' | 'onEvent'>;
  concurrency: number;
  logger: Logger;
  backoff?: BackoffOptions;
  /** How often a ready model is pulled again to follow its branch; 0 disables. Default 1 h. */
  resyncMs?: number;
  /** Bytes that arrived, by source (for metrics). */
  onBytes?: (source: ByteSource, bytes: number) => void;
  onPullDone?: (status: ModelStatus, error: unknown) => void;
}

interface Entry {
  spec: ModelSpec;
  status: ModelStatus;
  declared: boolean;
  requested: boolean;
  /** Bumped when include/exclude change, so a running pull with old filters is followed by another. */
  generation: number;
  running: { controller: AbortController; generation: number; done: Promise<void> } | undefined;
  queued: boolean;
  nextAttemptAt: number;
  /** bytesDone of the previous progress event of the running pull; -1 before the first. */
  lastBytesDone: number;
}

function sameFilters(a: ModelSpec, b: ModelSpec): boolean {
  const eq = (x?: string[], y?: string[]) => JSON.stringify(x ?? []) === JSON.stringify(y ?? []);
  return eq(a.include, b.include) && eq(a.exclude, b.exclude);
}

export class Reconciler extends EventEmitter<{ change: [ModelStatus]; removed: [string] }> {
  private readonly entries = new Map<string, Entry>();
  private readonly limit;
  private readonly log: Logger;
  private readonly backoff: BackoffOptions;
  private readonly resyncMs: number;
  private timer: NodeJS.Timeout | undefined;
  private kickPending = false;
  private stopped = false;
  private started = false;

  constructor(private readonly opts: ReconcilerOptions) {
    super();
    this.setMaxListeners(0);
    this.limit = pLimit(Math.max(1, opts.concurrency));
    this.log = opts.logger.child({ module: 'reconciler' });
    this.backoff = opts.backoff ?? RECONCILER_BACKOFF;
    this.resyncMs = opts.resyncMs ?? 60 * 60_000;
  }

  /** Replace the declared set. New models start; removed ones stop being pinned (not deleted). */
  setDeclared(specs: readonly ModelSpec[]): void {
    const want = new Map(specs.map((s) => [s.key, s]));
    for (const [key, e] of this.entries) {
      if (want.has(key) || !e.declared) continue;
      e.declared = false;
      e.status.declared = false;
      this.log.info({ ref: key }, 'model no longer declared: unpinned');
      // A pull in flight finishes (a transient edit must not waste a half-done download).
      if (!e.requested && !e.running) this.remove(key);
      else this.changed(e);
    }
    for (const spec of want.values()) this.upsert(spec, 'declared');
    this.kick();
  }

  /** An on-demand pull (POST /v1/pulls): tracked until restart, not pinned. */
  request(spec: ModelSpec): ModelStatus {
    const e = this.upsert(spec, 'requested');
    // Asking again for a failed model means "try now", not "after the backoff".
    if (e.status.state === 'failed' && !e.running) e.nextAttemptAt = 0;
    this.kick();
    return { ...e.status };
  }

  private upsert(spec: ModelSpec, why: 'declared' | 'requested'): Entry {
    let e = this.entries.get(spec.key);
    if (!e) {
      e = {
        spec,
        declared: why === 'declared',
        requested: why === 'requested',
        generation: 0,
        running: undefined,
        queued: false,
        nextAttemptAt: 0,
        lastBytesDone: -1,
        status: {
          ref: spec.key, commit: null, state: 'pending', bytesDone: 0, bytesTotal: 0, path: null, error: null, exitCode: null, errorCode: null,
          declared: why === 'declared', attempts: 0, nextRetryAt: null, waitingFor: null, updatedAt: new Date().toISOString(),
        },
      };
      this.entries.set(spec.key, e);
      this.log.info({ ref: spec.key, why }, 'model added');
      this.changed(e);
      return e;
    }
    if (why === 'declared' && !e.declared) {
      e.declared = true;
      e.status.declared = true;
      this.changed(e);
    }
    if (why === 'requested') e.requested = true;
    // Only the declaration decides the filters of a declared model; a request may not narrow it.
    if ((why === 'declared' || !e.declared) && !sameFilters(e.spec, spec)) {
      e.spec = spec;
      e.generation++;
      if (!e.running) {
        e.nextAttemptAt = 0;
        this.setState(e, 'pending');
      }
    }
    return e;
  }

  private remove(key: string): void {
    this.entries.delete(key);
    this.emit('removed', key);
  }

  list(): ModelStatus[] {
    return [...this.entries.values()].map((e) => ({ ...e.status }));
  }

  get(key: string): ModelStatus | undefined {
    const e = this.entries.get(key);
    return e ? { ...e.status } : undefined;
  }

  declaredSpecs(): ModelSpec[] {
    return [...this.entries.values()].filter((e) => e.declared).map((e) => e.spec);
  }

  /** Number of pulls running now. */
  get active(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.running) n++;
    return n;
  }

  /** GC keys of everything being pulled now: the revision when resolved, else the whole repo. */
  inUseKeys(): Set<string> {
    const out = new Set<string>();
    for (const e of this.entries.values()) {
      if (!e.running) continue;
      out.add(e.status.commit ? revisionKey({ ...e.spec.ref, commit: e.status.commit }) : repoKey(e.spec.ref));
    }
    return out;
  }

  /** Retry every failed model now (something changed: a bundle was imported, the network is back). */
  retryFailedNow(): void {
    for (const e of this.entries.values()) if (e.status.state === 'failed' && !e.running) e.nextAttemptAt = 0;
    this.kick();
  }

  /** Schedule the first reconcile. */
  start(): void {
    this.started = true;
    this.kick();
  }

  get isStarted(): boolean {
    return this.started;
  }

  /** Stop taking work, abort pulls in flight and wait (at most `timeoutMs`) for them to wind down. */
  async stop(timeoutMs = 8_000): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.limit.clearQueue();
    const running: Promise<void>[] = [];
    for (const e of this.entries.values()) {
      e.queued = false;
      if (e.running) {
        e.running.controller.abort(new Error('daemon stopping'));
        running.push(e.running.done);
      }
    }
    let t: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled(running), new Promise((r) => (t = setTimeout(r, timeoutMs)))]);
    clearTimeout(t);
  }

  /** Reconcile soon (coalesces bursts of changes into one pass). */
  kick(): void {
    if (this.stopped || !this.started || this.kickPending) return;
    this.kickPending = true;
    queueMicrotask(() => {
      this.kickPending = false;
      this.reconcile();
    });
  }

  private reconcile(): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const now = Date.now();
    let nextWake = Infinity;
    for (const e of this.entries.values()) {
      if (e.running || e.queued) continue;
      if (!e.declared && !e.requested) continue;
      // Ready models carry their next resync time in nextAttemptAt (Infinity when disabled).
      const due = e.nextAttemptAt;
      if (due === Infinity) continue;
      if (due <= now) this.enqueue(e);
      else nextWake = Math.min(nextWake, due);
    }
    if (nextWake !== Infinity) {
      // Bounded so that a clock jump cannot put the next pass days away.
      this.timer = setTimeout(() => this.reconcile(), Math.min(Math.max(0, nextWake - now), 60_000));
      this.timer.unref();
    }
  }

  private enqueue(e: Entry): void {
    e.queued = true;
    void this.limit(async () => {
      e.queued = false;
      if (this.stopped || this.entries.get(e.spec.key) !== e) return;
      await this.runPull(e);
    });
  }

  private async runPull(e: Entry): Promise<void> {
    const controller = new AbortController();
    const generation = e.generation;
    const spec = e.spec;
    let resolveDone!: () => void;
    e.running = { controller, generation, done: new Promise<void>((r) => (resolveDone = r)) };
    e.lastBytesDone = -1;
    e.status.waitingFor = null;
    const log = this.log.child({ ref: spec.key });
    const started = e.status.state;
    if (started !== 'ready') this.setState(e, 'downloading');
    let error: unknown;
    try {
      const opts: PullOptions = { ...this.opts.pullOptions(), signal: controller.signal, onEvent: (ev) => this.onEvent(e, ev) };
      if (spec.include) opts.include = spec.include;
      if (spec.exclude) opts.exclude = spec.exclude;
      const res = await this.opts.pull(spec.ref, opts);
      e.status.commit = res.commit;
      e.status.path = res.path;
      e.status.bytesDone = e.status.bytesTotal = Math.max(e.status.bytesTotal, e.status.bytesDone);
      e.status.error = null;
      e.status.exitCode = null;
      e.status.errorCode = null;
      e.status.attempts = 0;
      e.status.nextRetryAt = null;
      e.status.waitingFor = null;
      e.nextAttemptAt = this.resyncMs > 0 ? Date.now() + this.resyncMs : Infinity;
      this.setState(e, 'ready');
      if (started !== 'ready' || !res.alreadyComplete) {
        log.info({ commit: res.commit, path: res.path, bytesDownloaded: res.bytesDownloaded, alreadyComplete: res.alreadyComplete }, 'model ready');
      }
    } catch (err) {
      error = err;
      if (controller.signal.aborted && this.stopped) {
        // Interrupted by shutdown: not a failure; the engine's checkpoint resumes it next start.
        log.info('pull interrupted by shutdown');
        if (started !== 'ready') this.setState(e, 'pending');
      } else {
        e.status.attempts++;
        const delay = retryDelay(e.status.attempts, err, this.backoff);
        e.nextAttemptAt = Date.now() + delay;
        e.status.error = err instanceof Error ? err.message : String(err);
        e.status.exitCode = isSwiftFetchError(err) ? err.exitCode : 1;
        e.status.errorCode = isSwiftFetchError(err) ? err.code : null;
        e.status.nextRetryAt = new Date(e.nextAttemptAt).toISOString();
        e.status.waitingFor = null;
        // A failed resync leaves the published revision usable: the model stays ready.
        if (started === 'ready') this.changed(e);
        else this.setState(e, 'failed');
        log.warn({ err: e.status.error, code: (err as { code?: string }).code, attempt: e.status.attempts, retryInMs: delay }, 'pull failed; will retry');
      }
    } finally {
      e.running = undefined;
      resolveDone();
    }
    this.opts.onPullDone?.({ ...e.status }, error);
    if (this.entries.get(spec.key) !== e) return;
    if (!e.declared && !e.requested) {
      this.remove(spec.key);
      return;
    }
    // Filters changed while we were pulling: pull again with the new ones right away.
    if (e.generation !== generation && !this.stopped) {
      e.nextAttemptAt = 0;
      if (e.status.state === 'ready') this.setState(e, 'pending');
    }
    this.kick();
  }

  private onEvent(e: Entry, ev: PullEvent): void {
    const s = e.status;
    if (ev.type === 'progress') {
      const delta = ev.bytesDone - e.lastBytesDone;
      // The first progress event reports what was already on disk, which did not arrive now.
      if (delta > 0 && e.lastBytesDone >= 0) this.opts.onBytes?.(ev.source, delta);
      e.lastBytesDone = ev.bytesDone;
    }
    // A resync of a ready model keeps showing the published revision until a new one is published.
    if (s.state === 'ready' && ev.type !== 'published') return;
    switch (ev.type) {
      case 'resolved':
        s.commit = ev.commit;
        s.bytesTotal = ev.bytesTotal;
        this.setState(e, 'downloading');
        return;
      case 'waiting':
        s.waitingFor = ev.holder;
        this.setState(e, 'downloading');
        return;
      case 'progress': {
        s.bytesDone = ev.bytesDone;
        s.bytesTotal = ev.bytesTotal;
        s.waitingFor = null;
        if (s.state !== 'verifying') s.state = 'downloading';
        this.changed(e);
        return;
      }
      case 'verifying':
        this.setState(e, 'verifying');
        return;
      case 'published':
        s.path = ev.path;
        s.commit = ev.commit;
        this.changed(e);
        return;
      default:
        return;
    }
  }

  private setState(e: Entry, state: ModelState): void {
    e.status.state = state;
    this.changed(e);
  }

  private changed(e: Entry): void {
    e.status.updatedAt = new Date().toISOString();
    this.emit('change', { ...e.status });
  }
}
