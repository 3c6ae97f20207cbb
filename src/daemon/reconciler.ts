/**
 * Desired state (declared models + API requests) against actual state (what pulls achieved).
 * Each model is pulled by the injected pull function with bounded concurrency; a failure of a
 * declared model is never final: it is retried with capped, jittered exponential backoff, more
 * slowly when the hub said "not found" or "not allowed" (someone has to fix a token or a name,
 * hammering will not help). Ready models are re-synced now and then, so a branch that moved on the
 * hub is followed.
 *
 * On-demand models (requested through the API, not declared) are anyone's to ask for, so they are
 * bounded: at most `maxRequested` are tracked (the oldest settled one makes room; with none
 * settled a new request is refused), one the hub does not have or does not allow is not retried
 * by itself (asking again retries it), and a failed one nobody asked for again within
 * `forgetFailedAfterMs` is forgotten.
 *
 * The pull queue is ordered: declared models that are not ready go first, then on-demand pulls,
 * then re-syncs of ready models. A declared model that finds every slot taken by lower-ranked
 * pulls pauses the newest of them (aborted, back to pending, resumed later from the engine's
 * checkpoint; not counted as a failure), so requests can never starve what the operator declared.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { ExitCode, isSwiftFetchError } from '../core/errors.js';
import { repoKey, type ModelRef } from '../core/ref.js';
import { backoffDelay, type BackoffPolicy } from '../core/retry.js';
import type { PullEvent, PullOptions, PullResult } from '../pull/index.js';
import { revisionKey } from '../store/gc.js';
import type { ModelSpec } from './config.js';

/** 'urgent' (someone waits on it) or 'background' (a pre-pull): see src/transfer/priority.ts. */
type TransferPriority = NonNullable<PullOptions['priority']>;

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
  onPullDone?: (status: ModelStatus, error: unknown) => void;
  /**
   * The revision the store already holds for a model, if any: after a failed pull the daemon
   * serves it (the hub may be down, or answer 404 for a repo that has since gone private).
   */
  fromStore?: (spec: ModelSpec) => Promise<HeldRevision | undefined>;
  /** Bounds on on-demand models (default: 64 tracked, failed ones forgotten after 15 min). */
  onDemand?: { maxRequested: number; forgetFailedAfterMs: number };
}

/** A request for one more on-demand model while `maxRequested` are tracked and none has settled. */
export class TooManyRequested extends Error {
  constructor(readonly max: number) {
    super(`this daemon already tracks ${max} on-demand models, none of them settled yet: ask again later, or declare the model`);
    this.name = 'TooManyRequested';
  }
}

/** A revision published in the store. */
export interface HeldRevision {
  commit: string;
  path: string;
  /** Bytes of its files, when known. */
  bytes?: number;
}

interface Entry {
  spec: ModelSpec;
  status: ModelStatus;
  declared: boolean;
  requested: boolean;
  /** Bumped when include/exclude change, so a running pull with old filters is followed by another. */
  generation: number;
  running: { controller: AbortController; generation: number; done: Promise<void>; slot: Slot } | undefined;
  queued: boolean;
  nextAttemptAt: number;
  /** When the API last asked for it (on-demand models are forgotten some time after failing). */
  lastRequestedAt: number;
}

/** One of the `concurrency` pull slots, held from the start of a pull until it has wound down. */
interface Slot {
  entry: Entry;
  startedAt: number;
  /**
   * Why its pull was stopped to be queued again (to make room for a declared model, or to go on
   * as urgent); undefined while it runs as started.
   */
  pausedFor: string | undefined;
  /** Whether the pull asked the origin as a background pre-pull. */
  priority: TransferPriority;
}

function sameFilters(a: ModelSpec, b: ModelSpec): boolean {
  const eq = (x?: string[], y?: string[]) => JSON.stringify(x ?? []) === JSON.stringify(y ?? []);
  return eq(a.include, b.include) && eq(a.exclude, b.exclude);
}

export class Reconciler extends EventEmitter<{ change: [ModelStatus]; removed: [string] }> {
  private readonly entries = new Map<string, Entry>();
  /** Entries waiting for a slot, in arrival order (taken by rank, then order). */
  private readonly queue: Entry[] = [];
  private readonly concurrency: number;
  private readonly slots = new Set<Slot>();
  private readonly onDemand: { maxRequested: number; forgetFailedAfterMs: number };
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
    this.concurrency = Math.max(1, opts.concurrency);
    this.onDemand = opts.onDemand ?? { maxRequested: 64, forgetFailedAfterMs: 15 * 60_000 };
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

  /**
   * An on-demand pull (POST /v1/pulls): tracked until restart (or forgotten after failing), not
   * pinned. Throws TooManyRequested when the bound is reached and nothing can make room.
   */
  request(spec: ModelSpec): ModelStatus {
    if (!this.entries.has(spec.key)) this.makeRoom();
    const e = this.upsert(spec, 'requested');
    e.lastRequestedAt = Date.now();
    // Asking again for a failed model means "try now", not "after the backoff".
    if (e.status.state === 'failed' && !e.running) e.nextAttemptAt = 0;
    this.promote(e);
    this.kick();
    return { ...e.status };
  }

  /**
   * Someone waits on this model now (an init container asks for it: POST /v1/pulls). A
   * background pre-pull of it is stopped and queued again at once, to go on from its checkpoint
   * as urgent: the engine cannot change a transfer's priority in flight, and what it loses is at
   * most the chunks in flight.
   */
  private promote(e: Entry): void {
    const slot = e.running?.slot;
    if (!slot || slot.pausedFor !== undefined || slot.priority !== 'background') return;
    this.pause(slot, 'a pod waits on it; going on as urgent');
  }

  /** Stop a slot's pull without counting a failure; it goes back to pending and resumes from its checkpoint. */
  private pause(slot: Slot, why: string): void {
    slot.pausedFor = why;
    slot.entry.running!.controller.abort(new Error(`paused: ${why}`));
  }

  /**
   * Urgent when someone waits on it: requested through the API (init containers ask for their
   * model, a person asks by hand) and not ready yet. Declared pre-pulls and re-syncs of ready
   * models are background: they yield the origin to urgent pulls (src/transfer/priority.ts).
   */
  private priorityOf(e: Entry): TransferPriority {
    return e.requested && e.status.state !== 'ready' ? 'urgent' : 'background';
  }

  /** Room for one more on-demand model: forget the oldest settled one (failed first) if at the bound. */
  private makeRoom(): void {
    const onDemand = [...this.entries.values()].filter((e) => e.requested && !e.declared);
    if (onDemand.length < this.onDemand.maxRequested) return;
    const settled = onDemand
      .filter((e) => !e.running && !e.queued && (e.status.state === 'failed' || e.status.state === 'ready'))
      .sort((a, b) => Number(b.status.state === 'failed') - Number(a.status.state === 'failed') || a.lastRequestedAt - b.lastRequestedAt);
    const victim = settled[0];
    if (!victim) throw new TooManyRequested(this.onDemand.maxRequested);
    this.log.info({ ref: victim.spec.key, state: victim.status.state }, 'on-demand model forgotten to make room for another');
    this.remove(victim.spec.key);
  }

  /** `imported`: neither declared nor requested, listed because a bundle import put it in the store; never pulled. */
  private upsert(spec: ModelSpec, why: 'declared' | 'requested' | 'imported'): Entry {
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
        lastRequestedAt: 0,
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

  /** The spec a tracked model was declared or requested with. */
  spec(key: string): ModelSpec | undefined {
    return this.entries.get(key)?.spec;
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
    this.queue.length = 0;
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
      if (!e.declared && e.status.state === 'failed') {
        // A failed on-demand model is kept for a while for whoever asked, then forgotten.
        const forgetAt = e.lastRequestedAt + this.onDemand.forgetFailedAfterMs;
        if (forgetAt <= now) {
          this.log.info({ ref: e.spec.key }, 'failed on-demand model forgotten (not asked for again)');
          this.remove(e.spec.key);
          continue;
        }
        nextWake = Math.min(nextWake, forgetAt);
      }
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
    this.queue.push(e);
    this.pump();
  }

  /** 0: a declared model not ready yet; 1: an on-demand pull; 2: a re-sync of a ready model. */
  private rank(e: Entry): number {
    if (e.status.state === 'ready') return 2;
    return e.declared ? 0 : 1;
  }

  /** Start queued pulls while slots are free, best rank first (then arrival order). */
  private pump(): void {
    while (!this.stopped && this.slots.size < this.concurrency && this.queue.length > 0) {
      let best = 0;
      for (let i = 1; i < this.queue.length; i++) if (this.rank(this.queue[i]!) < this.rank(this.queue[best]!)) best = i;
      const e = this.queue.splice(best, 1)[0]!;
      e.queued = false;
      if (this.entries.get(e.spec.key) !== e) continue;
      const slot: Slot = { entry: e, startedAt: Date.now(), pausedFor: undefined, priority: this.priorityOf(e) };
      this.slots.add(slot);
      void this.runPull(e, slot).finally(() => {
        this.slots.delete(slot);
        this.pump();
      });
    }
    this.pauseForDeclared();
  }

  /**
   * Declared models waiting while lower-ranked pulls hold every slot: pause the newest of those,
   * one per waiting model. The paused pull goes back to pending and resumes from its checkpoint.
   */
  private pauseForDeclared(): void {
    if (this.stopped) return;
    let waiting = this.queue.filter((e) => this.rank(e) === 0).length;
    if (waiting === 0 || this.slots.size < this.concurrency) return;
    // A slot already paused is on its way to a waiting model.
    const slots = [...this.slots];
    waiting -= slots.filter((s) => s.pausedFor !== undefined).length;
    const candidates = slots.filter((s) => s.pausedFor === undefined && s.entry.running?.slot === s && this.rank(s.entry) > 0).sort((a, b) => b.startedAt - a.startedAt);
    for (const s of candidates) {
      if (waiting <= 0) break;
      this.pause(s, 'a declared model goes first');
      waiting--;
    }
  }

  private async runPull(e: Entry, slot: Slot): Promise<void> {
    const controller = new AbortController();
    const generation = e.generation;
    const spec = e.spec;
    let resolveDone!: () => void;
    e.running = { controller, generation, done: new Promise<void>((r) => (resolveDone = r)), slot };
    e.status.waitingFor = null;
    const log = this.log.child({ ref: spec.key });
    const started = e.status.state;
    if (started !== 'ready') this.setState(e, 'downloading');
    let error: unknown;
    try {
      const opts: PullOptions = { ...this.opts.pullOptions(), signal: controller.signal, onEvent: (ev) => this.onEvent(e, ev), priority: slot.priority };
      if (spec.include) opts.include = spec.include;
      if (spec.exclude) opts.exclude = spec.exclude;
      const res = await this.opts.pull(spec.ref, opts);
      this.markReady(e, res);
      if (started !== 'ready' || !res.alreadyComplete) {
        log.info({ commit: res.commit, path: res.path, bytesDownloaded: res.bytesDownloaded, alreadyComplete: res.alreadyComplete }, 'model ready');
      }
    } catch (err) {
      error = err;
      const shutdown = controller.signal.aborted && this.stopped;
      const paused = controller.signal.aborted && slot.pausedFor !== undefined;
      const held = shutdown || paused || started === 'ready' ? undefined : await this.opts.fromStore?.(spec).catch(() => undefined);
      if (shutdown) {
        // Interrupted by shutdown: not a failure; the engine's checkpoint resumes it next start.
        log.info('pull interrupted by shutdown');
        if (started !== 'ready') this.setState(e, 'pending');
      } else if (paused) {
        // Made room for a declared model, or promoted: not a failure; queued again, it resumes from its checkpoint.
        error = undefined;
        log.info(`pull paused: ${slot.pausedFor}`);
        e.nextAttemptAt = 0;
        if (started !== 'ready') this.setState(e, 'pending');
      } else if (held) {
        // The hub could not say (down, or 404 for a repo since removed or made private), but the
        // store holds a verified revision of this model: serve it, as a failed resync would.
        this.markReady(e, held);
        log.warn({ err: err instanceof Error ? err.message : String(err), commit: held.commit }, 'pull failed; serving the revision the store already has');
      } else {
        this.failed(e, err, started === 'ready', log);
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

  /**
   * A pull failed: record why and when to try again. An on-demand model the hub does not have (or
   * does not allow) is not tried again by itself: only a new request, or a declaration, retries it.
   */
  private failed(e: Entry, err: unknown, wasReady: boolean, log: Logger): void {
    e.status.attempts++;
    const final = !e.declared && isSwiftFetchError(err) && (err.exitCode === ExitCode.notFound || err.exitCode === ExitCode.auth);
    const delay = final ? Infinity : retryDelay(e.status.attempts, err, this.backoff);
    e.nextAttemptAt = Date.now() + delay;
    e.status.error = err instanceof Error ? err.message : String(err);
    e.status.exitCode = isSwiftFetchError(err) ? err.exitCode : 1;
    e.status.errorCode = isSwiftFetchError(err) ? err.code : null;
    e.status.nextRetryAt = final ? null : new Date(e.nextAttemptAt).toISOString();
    e.status.waitingFor = null;
    // A failed resync leaves the published revision usable: the model stays ready.
    if (wasReady) this.changed(e);
    else this.setState(e, 'failed');
    const fields = { err: e.status.error, code: (err as { code?: string }).code, attempt: e.status.attempts };
    if (final) log.warn(fields, 'on-demand pull failed; not retrying until asked again');
    else log.warn({ ...fields, retryInMs: delay }, 'pull failed; will retry');
  }

  /** The model is published at `held`: ready, failures forgotten, its next resync scheduled. */
  private markReady(e: Entry, held: HeldRevision): void {
    const s = e.status;
    s.commit = held.commit;
    s.path = held.path;
    s.bytesDone = s.bytesTotal = held.bytes ?? Math.max(s.bytesTotal, s.bytesDone);
    s.error = null;
    s.exitCode = null;
    s.errorCode = null;
    s.attempts = 0;
    s.nextRetryAt = null;
    s.waitingFor = null;
    e.nextAttemptAt = this.resyncMs > 0 ? Date.now() + this.resyncMs : Infinity;
    this.setState(e, 'ready');
  }

  /**
   * A revision of a model arrived in the store by other means (a bundle import, another process's
   * pull): a model waiting for it is ready now; one the daemon did not track is listed as imported.
   */
  adopt(spec: ModelSpec, held: HeldRevision): void {
    const e = this.entries.get(spec.key) ?? this.upsert(spec, 'imported');
    if (e.running || (e.status.state === 'ready' && e.status.commit === held.commit)) return;
    this.markReady(e, held);
    this.log.info({ ref: spec.key, commit: held.commit }, 'model found in the store');
  }

  /**
   * The store no longer has a ready model's revision (`swift-fetch rm`, a collection elsewhere): a
   * declared model is pulled again; any other stops being listed.
   */
  lost(key: string): void {
    const e = this.entries.get(key);
    if (!e || e.running || e.status.state !== 'ready') return;
    if (!e.declared) {
      this.log.info({ ref: key }, 'model removed from the store');
      this.remove(key);
      return;
    }
    this.log.info({ ref: key, commit: e.status.commit }, 'model removed from the store; pulling it again');
    e.status.commit = null;
    e.status.path = null;
    e.status.bytesDone = 0;
    e.nextAttemptAt = 0;
    this.setState(e, 'pending');
    this.kick();
  }

  private onEvent(e: Entry, ev: PullEvent): void {
    const s = e.status;
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
