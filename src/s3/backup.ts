/**
 * The daemon's `backup: {to: s3://BUCKET/PREFIX, models: [...]}`: once a declared model is ready,
 * push that revision to the bucket, in the replica layout (`PREFIX/<hub>/<ORG>/<NAME>/<commit>/`),
 * so a backup is also a replica other clusters can pull through. One push at a time; a failed push
 * is retried with backoff; a revision already in the bucket costs one listing (push moves nothing).
 */
import type { Logger } from 'pino';
import { formatS3Location, type ModelRef, type S3Location } from '../core/ref.js';
import { backoffDelay } from '../core/retry.js';
import type { RateLimiter } from '../transfer/index.js';
import { pushModel, type PushResult } from './push.js';

export interface BackupConfig {
  to: S3Location;
  /** Canonical keys (`hf://ORG/NAME@REV`) of the declared models to back up; undefined: all of them. */
  models?: string[];
}

export interface BackupOptions extends BackupConfig {
  store: string;
  env: NodeJS.ProcessEnv;
  limiter?: RateLimiter;
  logger: Logger;
  /** First and longest wait before retrying a failed push (default 30 s and 30 min). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Tests see each finished push. */
  onPushed?: (key: string, result: PushResult) => void;
}

interface Job {
  key: string;
  ref: ModelRef;
  commit: string;
  failures: number;
}

export class BackupQueue {
  private readonly log: Logger;
  private readonly wanted: Set<string> | undefined;
  /** `key@commit` already in the bucket (pushed, or found there) during this run. */
  private readonly done = new Set<string>();
  private readonly queue: Job[] = [];
  /** `key@commit` queued, pushing or waiting for a retry. */
  private readonly pending = new Set<string>();
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  /** Failed pushes waiting for their retry; other models go ahead meanwhile. */
  private readonly retries = new Set<NodeJS.Timeout>();

  constructor(private readonly opts: BackupOptions) {
    this.log = opts.logger.child({ module: 'backup', to: formatS3Location(opts.to) });
    this.wanted = opts.models ? new Set(opts.models) : undefined;
  }

  /** A model is ready at `commit`: back it up unless it is not wanted or already done. */
  offer(key: string, ref: ModelRef, commit: string): void {
    if (this.wanted && !this.wanted.has(key)) return;
    const id = `${key}@${commit}`;
    if (this.done.has(id) || this.pending.has(id) || this.abort.signal.aborted) return;
    this.pending.add(id);
    this.queue.push({ key, ref, commit, failures: 0 });
    this.drain();
  }

  private drain(): void {
    if (this.running || this.queue.length === 0 || this.abort.signal.aborted) return;
    const job = this.queue.shift()!;
    this.running = this.push(job).finally(() => {
      this.running = undefined;
      this.drain();
    });
  }

  private async push(job: Job): Promise<void> {
    // The store's record is looked up by commit: exactly the revision that became ready.
    const ref = { ...job.ref, revision: job.commit };
    try {
      const res = await pushModel(ref, { replica: this.opts.to }, { store: this.opts.store, env: this.opts.env, limiter: this.opts.limiter, logger: this.opts.logger, signal: this.abort.signal });
      this.done.add(`${job.key}@${job.commit}`);
      this.pending.delete(`${job.key}@${job.commit}`);
      this.log.info({ ref: job.key, commit: job.commit, dest: res.dest, bytesUploaded: res.bytesUploaded, alreadyComplete: res.alreadyComplete }, 'backed up');
      this.opts.onPushed?.(job.key, res);
    } catch (e) {
      if (this.abort.signal.aborted) return;
      job.failures++;
      const delay = backoffDelay(job.failures, { baseMs: this.opts.retryBaseMs ?? 30_000, maxMs: this.opts.retryMaxMs ?? 30 * 60_000, maxRetryAfterMs: 0 });
      this.log.warn({ ref: job.key, commit: job.commit, err: (e as Error).message, retryInMs: delay }, 'backup failed; will retry');
      const t = setTimeout(() => {
        this.retries.delete(t);
        this.queue.push(job);
        this.drain();
      }, delay);
      t.unref();
      this.retries.add(t);
    }
  }

  /** Stop: the push in flight is aborted (a multipart upload resumes next time). */
  async stop(): Promise<void> {
    this.abort.abort(new Error('daemon stopping'));
    for (const t of this.retries) clearTimeout(t);
    this.retries.clear();
    this.queue.length = 0;
    await this.running;
  }
}

/** What the backup needs to know of the daemon's reconciler (kept structural: s3 does not import the daemon). */
export interface ReadyModels {
  on(event: 'change', listener: (s: { ref: string; state: string; commit: string | null; declared: boolean }) => void): unknown;
  declaredSpecs(): Array<{ key: string; ref: ModelRef }>;
}

/** Offer every declared model to `queue` each time it becomes ready at a commit. */
export function backUpWhenReady(models: ReadyModels, queue: BackupQueue): BackupQueue {
  models.on('change', (s) => {
    if (s.state !== 'ready' || !s.commit || !s.declared) return;
    const spec = models.declaredSpecs().find((d) => d.key === s.ref);
    if (spec) queue.offer(s.ref, spec.ref, s.commit);
  });
  return queue;
}
