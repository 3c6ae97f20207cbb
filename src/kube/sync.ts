/**
 * The daemon's side of the Kubernetes API (all optional; see docs/kubernetes.md):
 *  - list+watch ModelCaches (re-list on 410), keep those whose nodeSelector matches this node's
 *    labels, and declare their models to the daemon next to the config and the models file;
 *  - write this node's entry of each cache's status by server-side apply under a per-node field
 *    manager (so daemons never overwrite each other), then the totals under optimistic concurrency;
 *  - re-hash every model the daemon reports ready before calling it ready, and label the Node
 *    `models.swift-fetch.io/<h>=ready` only then; the label goes when the model fails, is evicted
 *    or is no longer wanted;
 *  - turn failures into Events on the cache.
 * Nothing here may stop a download: every API call is allowed to fail, the failure is logged once
 * (naming the RBAC verb that is missing, if that is why), and the loops retry with backoff.
 */
import type { Logger } from 'pino';
import { parseRef } from '../core/ref.js';
import { sleep } from '../core/sleep.js';
import type { Store } from '../store/store.js';
import { verifyRecord } from '../store/verify.js';
import { KubeApiError, KubeClient, type KubeList } from './client.js';
import { inClusterConnection, loadKubeconfig } from './connection.js';
import { EventRecorder, failureReason } from './events.js';
import { modelLabelKey, nodeFieldManager } from './labels.js';
import { GROUP, KIND, MODELCACHES_PATH, VERSION, sameEntry, selectsNode, toModelSpec, totals, type ModelCache, type NodeEntry } from './modelcache.js';
import { NodeLabels } from './node.js';
import { ProblemLog } from './problems.js';
import type { ModelFeed, ModelSpecLike, ModelStatusLike } from './types.js';

export interface KubeSettings {
  enabled: boolean;
  /** A kubeconfig file; absent means in-cluster (service-account files). */
  kubeconfig?: string;
  /** Context of that kubeconfig; absent means its current-context. */
  context?: string;
}

export interface KubeSyncTuning {
  /** At most one status write per cache per interval (progress is frequent). Default 2 s. */
  statusIntervalMs?: number;
  /** How often the Node is re-read (labels for nodeSelector; our labels re-asserted). Default 30 s. */
  nodePollMs?: number;
  /** First retry delay after an API failure, doubled up to 60 s. Default 2 s. */
  retryMs?: number;
  /** Server-side timeout of one watch request. Default 300 s. */
  watchTimeoutSeconds?: number;
}

export interface KubeSyncOptions {
  settings: KubeSettings;
  env: NodeJS.ProcessEnv;
  logger: Logger;
  /** The reconciler: what the daemon has and is doing. */
  models: ModelFeed;
  store: Store;
  /** Called with the models this node's ModelCaches ask for, whenever that set changes. */
  declare(specs: ModelSpecLike[]): void;
  /** Stops the sync, like close(). */
  signal?: AbortSignal;
  tuning?: KubeSyncTuning;
}

export interface KubeSync {
  /** Aborted when the sync stops. */
  readonly signal: AbortSignal;
  close(): Promise<void>;
}

/** Start syncing with the API server in the background; never throws, never blocks the daemon. */
export function startKubeSync(opts: KubeSyncOptions): KubeSync {
  const sync = new Sync(opts);
  return { signal: sync.signal, close: () => sync.close() };
}

type Verified = { commit: string; outcome: 'ok' | 'bad' | 'gone'; error?: string };

class Sync {
  private readonly abort = new AbortController();
  readonly signal = this.abort.signal;
  private readonly log: Logger;
  private readonly problems: ProblemLog;
  private readonly node: string | undefined;
  private readonly t: Required<KubeSyncTuning>;
  private client: KubeClient | undefined;
  private events: EventRecorder | undefined;
  private readonly caches = new Map<string, ModelCache>();
  private listed = false;
  private readonly nodeLabels: NodeLabels;
  /** Caches that select this node: their model spec, or why their spec is unusable. */
  private selected = new Map<string, ModelSpecLike | { invalid: string }>();
  private declaredJson = '';
  private readonly written = new Map<string, NodeEntry | null>();
  private readonly dirty = new Set<string>();
  private flushTimer: NodeJS.Timeout | undefined;
  private lastFlushAt = 0;
  private flushFailures = 0;
  private flushing: Promise<void> = Promise.resolve();
  private readonly verified = new Map<string, Verified>();
  private verifying: Promise<void> = Promise.resolve();
  private readonly queuedVerify = new Set<string>();
  private readonly seen = new Map<string, { state: string; attempts: number }>();
  private readonly main: Promise<void>;

  constructor(private readonly opts: KubeSyncOptions) {
    this.log = opts.logger.child({ module: 'kube' });
    this.problems = new ProblemLog(this.log);
    this.t = { statusIntervalMs: 2_000, nodePollMs: 30_000, retryMs: 2_000, watchTimeoutSeconds: 300, ...opts.tuning };
    this.node = opts.env.NODE_NAME?.trim() || undefined;
    this.nodeLabels = new NodeLabels(this.node ?? '', {
      signal: this.signal,
      problems: this.problems,
      log: this.log,
      onOtherLabelsChanged: () => this.cachesChanged(this.caches.keys()),
    });
    opts.signal?.addEventListener('abort', () => void this.close(), { once: true });
    if (!this.node || opts.signal?.aborted) {
      if (opts.signal?.aborted) this.abort.abort(opts.signal.reason);
      else this.log.warn('kubernetes.enabled but NODE_NAME is unset (the chart sets it from spec.nodeName): not syncing with the API');
      this.main = Promise.resolve();
      return;
    }
    opts.models.on('change', this.onChange);
    opts.models.on('removed', this.onRemoved);
    for (const s of opts.models.list()) this.onChange(s);
    this.main = this.run().catch((e) => {
      if (!this.signal.aborted) this.log.error({ err: (e as Error).message }, 'kubernetes sync stopped unexpectedly');
    });
  }

  async close(): Promise<void> {
    if (!this.signal.aborted) this.abort.abort(new Error('kubernetes sync closing'));
    this.opts.models.off('change', this.onChange);
    this.opts.models.off('removed', this.onRemoved);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    await this.main;
    await Promise.allSettled([this.flushing, this.verifying, this.nodeLabels.idle()]);
    await this.client?.close();
  }

  // ---- connection and loops ----------------------------------------------------------------

  private async run(): Promise<void> {
    this.client = await this.connect();
    if (!this.client) return;
    this.events = new EventRecorder(this.client, this.node!);
    this.nodeLabels.attach(this.client);
    this.log.info({ server: this.client.conn.server, node: this.node }, 'kubernetes: syncing ModelCaches and node labels');
    await this.nodeLabels.read();
    await Promise.all([this.watchLoop(), this.nodeLoop()]);
  }

  /** Retry with backoff until the connection settings can be read (a kubeconfig may appear later). */
  private async connect(): Promise<KubeClient | undefined> {
    const { settings, env } = this.opts;
    for (let attempt = 0; !this.signal.aborted; attempt++) {
      try {
        const conn = settings.kubeconfig ? await loadKubeconfig(settings.kubeconfig, settings.context) : await inClusterConnection(env);
        this.problems.ok('connect');
        return new KubeClient(conn);
      } catch (e) {
        this.problems.fail('connect', e);
        if (!(await this.pause(attempt))) return undefined;
      }
    }
    return undefined;
  }

  /** Backoff sleep; false when the sync is stopping. */
  private async pause(attempt: number): Promise<boolean> {
    const ms = Math.min(60_000, this.t.retryMs * 2 ** Math.min(attempt, 10));
    try {
      await sleep(ms * (0.75 + Math.random() * 0.5), this.signal);
      return true;
    } catch {
      return false;
    }
  }

  private async watchLoop(): Promise<void> {
    const client = this.client!;
    let rv: string | undefined;
    let failures = 0;
    while (!this.signal.aborted) {
      try {
        if (rv === undefined) {
          const list = await client.get<KubeList<ModelCache>>(MODELCACHES_PATH, { signal: this.signal });
          this.caches.clear();
          for (const mc of list.items) this.caches.set(mc.metadata.name, mc);
          rv = list.metadata.resourceVersion;
          this.listed = true;
          this.cachesChanged([...this.caches.keys(), ...this.written.keys()]);
        }
        for await (const ev of client.watch<ModelCache>(MODELCACHES_PATH, rv, { signal: this.signal, timeoutSeconds: this.t.watchTimeoutSeconds })) {
          rv = ev.object.metadata.resourceVersion ?? rv;
          this.problems.ok('watch ModelCaches');
          failures = 0;
          if (ev.type === 'BOOKMARK') continue;
          const name = ev.object.metadata.name;
          if (ev.type === 'DELETED') this.caches.delete(name);
          else this.caches.set(name, ev.object);
          this.cachesChanged([name]);
        }
        this.problems.ok('watch ModelCaches');
      } catch (e) {
        if (this.signal.aborted) return;
        if (e instanceof KubeApiError && e.expired) {
          rv = undefined; // our version is too old: list again
          continue;
        }
        this.problems.fail('watch ModelCaches', e);
        if (!(await this.pause(failures++))) return;
        // After an error we cannot know what we missed: list again.
        rv = undefined;
      }
    }
  }

  private async nodeLoop(): Promise<void> {
    while (!this.signal.aborted) {
      try {
        await sleep(this.t.nodePollMs, this.signal);
      } catch {
        return;
      }
      await this.nodeLabels.read();
      await this.checkEvicted();
      this.nodeLabels.sync();
    }
  }

  // ---- which caches select this node ----------------------------------------------------

  /** Recompute the caches that select this node, declare their models, and mark `names` for a status write. */
  private cachesChanged(names: Iterable<string>): void {
    const labels = this.nodeLabels.labels ?? {};
    const selected = new Map<string, ModelSpecLike | { invalid: string }>();
    for (const [name, mc] of this.caches) {
      if (!selectsNode(mc.spec ?? { ref: '' }, labels)) continue;
      try {
        selected.set(name, toModelSpec(mc.spec, this.opts.env));
      } catch (e) {
        selected.set(name, { invalid: (e as Error).message });
      }
    }
    for (const [name, s] of selected) {
      const before = this.selected.get(name);
      if ('invalid' in s && !(before && 'invalid' in before && before.invalid === s.invalid)) this.emitFor(name, 'Warning', 'InvalidSpec', s.invalid);
    }
    this.selected = selected;
    const specs: ModelSpecLike[] = [];
    const seen = new Set<string>();
    for (const s of selected.values()) if ('key' in s && !seen.has(s.key)) (seen.add(s.key), specs.push(s));
    const json = JSON.stringify(specs.map((s) => [s.key, s.include ?? [], s.exclude ?? []]));
    if (json !== this.declaredJson) {
      this.declaredJson = json;
      this.log.info({ models: specs.map((s) => s.key) }, 'ModelCaches for this node');
      this.opts.declare(specs);
    }
    for (const n of names) this.markDirty(n);
    if (this.listed) this.nodeLabels.removeStaleOnce(() => this.knownLabels());
  }

  /** Placement labels of every model this daemon has or is asked for. */
  private knownLabels(): Set<string> {
    const keys = [...this.opts.models.list().map((s) => s.ref), ...[...this.selected.values()].flatMap((s) => ('key' in s ? [s.key] : []))];
    return new Set(keys.map(safeLabel).filter((l): l is string => l !== undefined));
  }

  private cachesFor(key: string): string[] {
    return [...this.selected].filter(([, s]) => 'key' in s && s.key === key).map(([n]) => n);
  }

  // ---- model events ------------------------------------------------------------------------

  private readonly onChange = (s: ModelStatusLike): void => {
    const prev = this.seen.get(s.ref);
    this.seen.set(s.ref, { state: s.state, attempts: s.attempts });
    const label = safeLabel(s.ref);
    if (s.state === 'failed' && (prev?.state !== 'failed' || prev.attempts !== s.attempts)) {
      if (label) this.nodeLabels.setWanted(label, 'absent');
      this.emit(s.ref, 'Warning', failureReason(s.exitCode), s.error ?? 'pull failed');
    }
    if (s.state === 'ready' && s.commit) this.maybeVerify(s.ref, s.commit);
    for (const n of this.cachesFor(s.ref)) this.markDirty(n);
  };

  private readonly onRemoved = (key: string): void => {
    this.seen.delete(key);
    this.verified.delete(key);
    const label = safeLabel(key);
    if (label) this.nodeLabels.setWanted(label, 'absent');
  };

  private emit(key: string, type: 'Normal' | 'Warning', reason: string, message: string): void {
    for (const name of this.cachesFor(key)) this.emitFor(name, type, reason, message);
  }

  private emitFor(name: string, type: 'Normal' | 'Warning', reason: string, message: string): void {
    const mc = this.caches.get(name);
    if (!this.events || !mc) return;
    const cache = mc.metadata.uid ? { name, uid: mc.metadata.uid } : { name };
    void this.events.record({ cache, type, reason, message }).then(
      () => this.problems.ok('record Events'),
      (e) => this.problems.fail('record Events', e),
    );
  }

  // ---- verification and labels ----------------------------------------------------------

  /** Re-hash a revision the daemon calls ready, once per commit, one model at a time. */
  private maybeVerify(key: string, commit: string): void {
    const id = `${key}#${commit}`;
    if (this.verified.get(key)?.commit === commit || this.queuedVerify.has(id)) return;
    this.queuedVerify.add(id);
    this.verifying = this.verifying.then(async () => {
      try {
        if (this.signal.aborted) return;
        const current = this.opts.models.get(key);
        if (!current || current.commit !== commit) return; // superseded while queued
        const v = await this.verify(key, commit);
        this.verified.set(key, v);
        const label = safeLabel(key);
        if (label) this.nodeLabels.setWanted(label, v.outcome === 'ok' ? 'ready' : 'absent');
        if (v.outcome === 'ok') this.emit(key, 'Normal', 'Ready', `verified at commit ${commit}`);
        else this.emit(key, 'Warning', 'IntegrityFailed', v.error ?? 'verification failed');
        for (const n of this.cachesFor(key)) this.markDirty(n);
      } finally {
        this.queuedVerify.delete(id);
      }
    });
  }

  private async verify(key: string, commit: string): Promise<Verified> {
    try {
      const rec = await this.opts.store.readRecord(parseRef(key, {}), commit);
      if (!rec) return { commit, outcome: 'gone', error: 'no longer in the store' };
      const problems = await verifyRecord(rec);
      if (problems.length === 0) {
        this.log.info({ ref: key, commit, files: rec.files.length, bytes: rec.bytes }, 're-hashed: verified in the store');
        return { commit, outcome: 'ok' };
      }
      const p = problems[0]!;
      const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : '';
      const error = `verification failed: ${p.path}: ${p.problem} mismatch, expected ${p.expected}, found ${p.found}${more}`;
      this.log.warn({ ref: key, commit, problems }, 'model in the store does not match its record');
      return { commit, outcome: 'bad', error };
    } catch (e) {
      return { commit, outcome: 'bad', error: `verification failed: ${(e as Error).message}` };
    }
  }

  /** A model we labelled ready that left the store (swift-fetch rm, a wiped volume) loses its label. */
  private async checkEvicted(): Promise<void> {
    for (const [key, v] of this.verified) {
      if (v.outcome !== 'ok') continue;
      const rec = await this.opts.store.readRecord(parseRef(key, {}), v.commit).catch(() => undefined);
      if (rec) continue;
      this.verified.set(key, { commit: v.commit, outcome: 'gone', error: 'no longer in the store' });
      const label = safeLabel(key);
      if (label) this.nodeLabels.setWanted(label, 'absent');
      for (const n of this.cachesFor(key)) this.markDirty(n);
    }
  }

  // ---- status ------------------------------------------------------------------------------

  private markDirty(name: string): void {
    this.dirty.add(name);
    if (this.flushTimer || this.signal.aborted) return;
    // After failed writes (a missing verb, an unreachable server) back off instead of retrying every interval.
    const interval = this.flushFailures === 0 ? this.t.statusIntervalMs : Math.min(60_000, this.t.retryMs * 2 ** Math.min(this.flushFailures, 10));
    const delay = Math.max(0, this.lastFlushAt + interval - Date.now());
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      this.flushing = this.flushing.then(() => this.flush());
    }, delay);
  }

  private async flush(): Promise<void> {
    if (!this.client || this.signal.aborted) return;
    this.lastFlushAt = Date.now();
    const names = [...this.dirty];
    this.dirty.clear();
    for (const name of names) {
      try {
        await this.writeStatus(name);
        this.flushFailures = 0;
        this.problems.ok('write ModelCache status');
      } catch (e) {
        if (this.signal.aborted) return;
        this.flushFailures++;
        this.problems.fail('write ModelCache status', e);
        // Try again on the next round; a forbidden write keeps failing quietly (logged once).
        this.markDirty(name);
      }
    }
  }

  /** This node's entry for a cache, from the daemon's view of the model and our re-hash. */
  private entryFor(name: string): NodeEntry | undefined {
    const sel = this.selected.get(name);
    if (!sel) return undefined;
    const updatedAt = new Date().toISOString();
    if ('invalid' in sel) return { node: this.node!, state: 'failed', bytesDone: 0, bytesTotal: 0, error: sel.invalid, updatedAt };
    const s = this.opts.models.get(sel.key);
    if (!s) return { node: this.node!, state: 'pending', bytesDone: 0, bytesTotal: 0, updatedAt };
    const entry: NodeEntry = { node: this.node!, state: s.state, bytesDone: s.bytesDone, bytesTotal: s.bytesTotal, updatedAt };
    if (s.commit) entry.commit = s.commit;
    if (s.state === 'failed' && s.error) entry.error = s.error.slice(0, 1024);
    if (s.state === 'ready') {
      const v = this.verified.get(sel.key);
      if (!v || v.commit !== s.commit) entry.state = 'verifying';
      else if (v.outcome !== 'ok') {
        entry.state = v.outcome === 'gone' ? 'pending' : 'failed';
        if (v.error) entry.error = v.error.slice(0, 1024);
      }
    }
    return entry;
  }

  private async writeStatus(name: string): Promise<void> {
    const mc = this.caches.get(name);
    if (!mc) {
      this.written.delete(name);
      return;
    }
    const entry = this.entryFor(name);
    const ours = mc.status?.nodes?.find((n) => n.node === this.node);
    if (!entry && !ours) {
      this.written.delete(name);
      return;
    }
    if (entry && ours && sameEntry(entry, ours)) return;
    // Server-side apply as this node's manager: the list is a map keyed by node, so our apply owns
    // exactly our entry, and applying none removes it.
    const applied = await this.client!.patch<ModelCache>(
      `${MODELCACHES_PATH}/${encodeURIComponent(name)}/status`,
      'apply',
      { apiVersion: `${GROUP}/${VERSION}`, kind: KIND, metadata: { name }, status: { nodes: entry ? [entry] : [] } },
      { query: { fieldManager: nodeFieldManager(this.node!), force: true }, signal: this.signal },
    );
    this.written.set(name, entry ?? null);
    this.caches.set(name, applied);
    await this.writeTotals(name, applied);
  }

  /** Totals over every node's entry, written only against the version they were counted from. */
  private async writeTotals(name: string, mc: ModelCache): Promise<void> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const t = totals(mc.status?.nodes);
      const s = mc.status ?? {};
      if (s.ready === t.ready && s.failed === t.failed && s.total === t.total) return;
      try {
        const patched = await this.client!.patch<ModelCache>(
          `${MODELCACHES_PATH}/${encodeURIComponent(name)}/status`,
          'merge',
          { metadata: { resourceVersion: mc.metadata.resourceVersion }, status: t },
          { query: { fieldManager: 'swift-fetch-totals' }, signal: this.signal },
        );
        this.caches.set(name, patched);
        return;
      } catch (e) {
        if (!(e instanceof KubeApiError && e.conflict)) throw e;
        // Another node wrote meanwhile: count again from what is there now.
        mc = await this.client!.get<ModelCache>(`${MODELCACHES_PATH}/${encodeURIComponent(name)}`, { signal: this.signal });
      }
    }
  }
}

function safeLabel(key: string): string | undefined {
  try {
    return modelLabelKey(key, {});
  } catch {
    return undefined;
  }
}
