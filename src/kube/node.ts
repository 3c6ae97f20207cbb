/**
 * This daemon's Node: its labels (read now and then, for ModelCache nodeSelectors) and the
 * placement labels `models.swift-fetch.io/<h>=ready` we keep on it. Wanted labels are recorded at
 * once and brought to the Node by one merge patch at a time, coalescing bursts; a failed patch is
 * logged once and retried on the next change or poll.
 */
import type { Logger } from 'pino';
import type { KubeClient } from './client.js';
import { MODEL_LABEL_PREFIX, MODEL_LABEL_READY } from './labels.js';
import type { ProblemLog } from './problems.js';

export type LabelWant = 'ready' | 'absent';

interface NodeObject {
  metadata: { labels?: Record<string, string> };
}

export class NodeLabels {
  /** The Node's labels as last read or patched; undefined until the Node was read once. */
  labels: Record<string, string> | undefined;
  private readonly want = new Map<string, LabelWant>();
  private running: Promise<void> | undefined;
  private again = false;
  private stale: 'waiting' | (() => Set<string>) | 'done' = 'waiting';
  private client: KubeClient | undefined;

  constructor(
    private readonly node: string,
    private readonly opts: { signal: AbortSignal; problems: ProblemLog; log: Logger; onOtherLabelsChanged: () => void },
  ) {}

  /** Wanted labels are recorded before the API is reachable; they reach the Node from here on. */
  attach(client: KubeClient): void {
    this.client = client;
  }

  private get path(): string {
    return `/api/v1/nodes/${encodeURIComponent(this.node)}`;
  }

  async read(): Promise<void> {
    if (!this.client) return;
    try {
      this.set((await this.client.get<NodeObject>(this.path, { signal: this.opts.signal })).metadata.labels ?? {});
      this.opts.problems.ok('read Node');
    } catch (e) {
      if (!this.opts.signal.aborted) this.opts.problems.fail('read Node', e);
    }
  }

  /** Want a placement label present or absent. */
  setWanted(label: string, want: LabelWant): void {
    if (this.want.get(label) === want) return;
    this.want.set(label, want);
    this.sync();
  }

  /**
   * Once, at the next sync: remove our labels whose model is not in `known()` (left by an earlier
   * run). Labels of models still known wait for their re-verification instead of flapping.
   */
  removeStaleOnce(known: () => Set<string>): void {
    if (this.stale === 'waiting') this.stale = known;
    this.sync();
  }

  /** Bring the Node in line with what is wanted; coalesced, one patch at a time. */
  sync(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.patch();
      } while (this.again && !this.opts.signal.aborted);
    })().finally(() => (this.running = undefined));
  }

  /** Resolves when no patch is in flight. */
  async idle(): Promise<void> {
    await this.running;
  }

  private set(labels: Record<string, string>): void {
    const others = (l: Record<string, string> | undefined) =>
      JSON.stringify(Object.entries(l ?? {}).filter(([k]) => !k.startsWith(MODEL_LABEL_PREFIX)).sort());
    const changed = others(labels) !== others(this.labels);
    this.labels = labels;
    if (changed) this.opts.onOtherLabelsChanged();
  }

  private async patch(): Promise<void> {
    const have = this.labels;
    if (!this.client || !have || this.opts.signal.aborted) return;
    const patch: Record<string, string | null> = {};
    for (const [k, want] of this.want) {
      if (want === 'ready' && have[k] !== MODEL_LABEL_READY) patch[k] = MODEL_LABEL_READY;
      if (want === 'absent' && k in have) patch[k] = null;
    }
    if (typeof this.stale === 'function') {
      const known = this.stale();
      for (const k of Object.keys(have)) if (k.startsWith(MODEL_LABEL_PREFIX) && !known.has(k) && this.want.get(k) !== 'ready') patch[k] = null;
      this.stale = 'done';
    }
    if (Object.keys(patch).length === 0) return;
    try {
      const node = await this.client.patch<NodeObject>(this.path, 'merge', { metadata: { labels: patch } }, { query: { fieldManager: 'swift-fetch' }, signal: this.opts.signal });
      this.opts.log.info({ labels: patch }, 'node labels updated');
      this.set(node.metadata.labels ?? {});
      this.opts.problems.ok('label Node');
    } catch (e) {
      if (!this.opts.signal.aborted) this.opts.problems.fail('label Node', e);
    }
  }
}
