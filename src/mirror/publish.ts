/**
 * Records for what the mirror fetched. A blob in the store that no publish record lists is
 * garbage to the GC, and a revision without a record cannot be served while the hub is down; so
 * once blobs land, their revision is published with every file the store holds of it. A partial
 * revision is published under its commit only; branch names (refs) move to it once it is complete,
 * so a partly mirrored commit never takes `refs/main` away from a complete one in the views.
 * Publishing takes the revision's pull lease: a pull of the same revision publishes first, and
 * we merge into its record afterwards.
 */
import type { Logger } from 'pino';
import { repoKey, type ModelHub, type ModelRef } from '../core/ref.js';
import { sleep } from '../core/sleep.js';
import { tryAcquireLease } from '../store/lease.js';
import type { Store } from '../store/store.js';
import type { Catalog, MirrorRepo, Pinned } from './catalog.js';

const DEBOUNCE_MS = 300;
const TOUCH_EVERY_MS = 60_000;

interface Pending {
  ref: MirrorRepo;
  pinned: Pinned;
  /** Keys still downloading for this revision. */
  keys: Set<string>;
  timer?: NodeJS.Timeout;
  running?: Promise<void>;
  again?: boolean;
}

export class Publisher {
  private readonly pending = new Map<string, Pending>();
  private readonly touched = new Map<string, number>();

  constructor(private readonly d: { store: Store; catalog: Catalog; holder: string; logger: Logger; signal: AbortSignal; leaseTtlMs?: number }) {}

  /** A client waits for `key` of this revision; publish once its fetch ends. */
  want(pinned: Pinned, key: string): void {
    const p = this.entry(pinned);
    p.keys.add(key);
  }

  /** A fetch of `key` ended: publish what the store now holds of the revisions that wanted it. */
  settled(key: string): void {
    for (const p of this.pending.values()) {
      if (!p.keys.delete(key)) continue;
      this.schedule(p);
    }
  }

  /** A revision was read from the store: keep it recent for the GC (at most once a minute). */
  touch(ref: Omit<ModelRef, 'revision'>, commit: string): void {
    const k = `${repoKey(ref)}@${commit}`;
    const last = this.touched.get(k) ?? 0;
    if (Date.now() - last < TOUCH_EVERY_MS) return;
    this.touched.set(k, Date.now());
    void this.d.store.readRecord(ref, commit).then((rec) => (rec ? this.d.store.touch(ref, commit) : undefined)).catch(() => undefined);
  }

  async drain(): Promise<void> {
    for (const p of this.pending.values()) if (p.timer) clearTimeout(p.timer);
    await Promise.allSettled([...this.pending.values()].map((p) => p.running));
  }

  private entry(pinned: Pinned): Pending {
    const r = pinned.manifest.ref;
    const ref = { hub: r.hub as ModelHub, org: r.org, name: r.name };
    const k = `${repoKey(ref)}@${pinned.manifest.commit}`;
    let p = this.pending.get(k);
    if (!p) this.pending.set(k, (p = { ref, pinned, keys: new Set() }));
    if (pinned.complete && !p.pinned.complete) p.pinned = pinned;
    return p;
  }

  private schedule(p: Pending): void {
    if (p.running) {
      p.again = true;
      return;
    }
    if (p.timer) clearTimeout(p.timer);
    p.timer = setTimeout(() => {
      p.timer = undefined;
      p.running = this.publish(p)
        .catch((e: Error) => this.d.logger.warn({ ref: repoKey(p.ref), commit: p.pinned.manifest.commit, err: e.message }, 'mirror could not publish a revision'))
        .finally(() => {
          p.running = undefined;
          if (p.again) {
            p.again = false;
            this.schedule(p);
          } else if (p.keys.size === 0) {
            this.pending.delete(`${repoKey(p.ref)}@${p.pinned.manifest.commit}`);
          }
        });
    }, DEBOUNCE_MS);
  }

  private async publish(p: Pending): Promise<void> {
    const { store } = this.d;
    const { manifest, complete: listed } = p.pinned;
    const leaseName = `${repoKey(p.ref)}@${manifest.commit}`;
    let lease = await tryAcquireLease(store.leaseDir, leaseName, { holder: this.d.holder, ...(this.d.leaseTtlMs ? { ttlMs: this.d.leaseTtlMs } : {}) });
    for (let i = 0; !lease && i < 600 && !this.d.signal.aborted; i++) {
      await sleep(1000, this.d.signal);
      lease = await tryAcquireLease(store.leaseDir, leaseName, { holder: this.d.holder });
    }
    if (!lease) return;
    try {
      const files: Array<(typeof manifest.files)[number] & { sha256: string; verified: boolean }> = [];
      for (const f of manifest.files) {
        const sha = f.sha256 && (await store.hasBlob(f.sha256)) ? f.sha256 : f.gitOid && !f.sha256 ? await store.shaForGitOid(f.gitOid) : undefined;
        if (sha) files.push({ ...f, sha256: sha, verified: Boolean(f.sha256 || f.gitOid) });
      }
      if (files.length === 0) return;
      await store.init();
      const complete = listed && files.length === manifest.files.length;
      const names = complete ? this.d.catalog.namesFor(p.ref.hub, `${p.ref.org}/${p.ref.name}`, manifest.commit) : [];
      for (const revision of names.length > 0 ? names : [manifest.commit]) {
        await store.publish({ key: p.ref, commit: manifest.commit, revision, files, complete });
      }
    } finally {
      await lease.release();
    }
  }
}
