/**
 * A lease in the bucket, so that pushes of one revision to one prefix (every daemon of a DaemonSet
 * backing up the same model, two operators running `push` at once) do not all upload it: one
 * pushes, the others wait and then find everything in place.
 *
 * Protocol, on S3 conditional writes only (no clocks compared for ownership):
 * - acquire: PUT the lease object with `If-None-Match: *`; exactly one creator wins.
 * - taken and stale (its `expiresAt`, plus a margin for clock skew, has passed, or its holder was a
 *   process on this very host that no longer exists): take it over with `PUT If-Match: <the stale
 *   ETag>`, a compare-and-swap only one contender can win.
 * - heartbeat: the holder renews with `PUT If-Match: <its ETag>`; a failed renewal means the lease was
 *   taken over (we stalled past the ttl) and is reported, not fought for.
 * - release: DELETE.
 * The worst a lost race costs is a duplicated upload: every byte is checked by the bucket and the
 * manifest is written last, so concurrent pushes of the same revision cannot corrupt it. A provider
 * without conditional writes makes every acquire succeed: no coordination, nothing worse.
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { AuthError } from '../core/errors.js';
import { sleep } from '../core/sleep.js';
import { unquote, type S3Client } from './client.js';

export const PUSH_LEASE_NAME = '.swift-fetch-push.lock';
const DEFAULT_TTL_MS = 30_000;
/** A lease counts as stale only this long after its holder's own expiry time (clock skew). */
const SKEW_MS = 30_000;

interface LeaseBody {
  holder: string;
  host: string;
  pid: number;
  expiresAt: number;
}

export interface BucketLease {
  readonly lost: boolean;
  release(): Promise<void>;
}

export interface BucketLeaseOptions {
  holder: string;
  ttlMs?: number;
  /** Clock skew allowance before a lease counts as stale (tests shorten it). */
  skewMs?: number;
  pollMs?: number;
  signal?: AbortSignal;
  logger?: Logger;
  /** Told (once per holder seen) that someone else holds the lease and we wait. */
  onWait?: (holder: string) => void;
}

/**
 * Hold the lease `key` in `bucket`, waiting while someone else holds it. Resolves undefined when the
 * provider cannot do conditional writes (or refuses the lease object for a reason other than
 * credentials): the caller proceeds without coordination.
 */
export async function holdBucketLease(client: S3Client, bucket: string, key: string, o: BucketLeaseOptions): Promise<BucketLease | undefined> {
  const ttl = o.ttlMs ?? DEFAULT_TTL_MS;
  const skew = o.skewMs ?? SKEW_MS;
  const body = () => JSON.stringify({ holder: o.holder, host: hostname(), pid: process.pid, expiresAt: Date.now() + ttl } satisfies LeaseBody);
  const put = async (headers: Record<string, string>) => {
    const text = body();
    const res = await client.call({ method: 'PUT', bucket, key, headers: { 'content-type': 'application/json', ...headers }, body: text, bodySize: Buffer.byteLength(text), accept: [409, 412], what: `taking the push lease s3://${bucket}/${key}`, signal: o.signal, retries: 2 });
    return res.status === 200 ? unquote(String(res.headers.etag ?? '')) || '?' : undefined;
  };
  let announced = '';
  try {
    for (;;) {
      let etag = await put({ 'if-none-match': '*' });
      if (!etag) {
        const cur = await client.getText(bucket, key, o.signal);
        if (!cur) continue; // released in between: try to create again
        const held = parse(cur.text);
        if (!held || held.expiresAt + skew < Date.now() || deadHere(held)) {
          etag = await put({ 'if-match': `"${cur.etag}"` });
        } else if (announced !== held.holder) {
          announced = held.holder;
          o.logger?.info({ holder: held.holder, lease: `s3://${bucket}/${key}` }, 'another process is pushing here; waiting for it');
          o.onWait?.(held.holder);
        }
      }
      if (etag) return new Held(client, bucket, key, etag, ttl, put, o.logger);
      await sleep(o.pollMs ?? 2_000, o.signal);
    }
  } catch (e) {
    if (o.signal?.aborted || e instanceof AuthError) throw e;
    o.logger?.warn({ err: (e as Error).message }, 'no push lease in this bucket (conditional writes unsupported?); pushing without one');
    return undefined;
  }
}

function parse(text: string): LeaseBody | undefined {
  try {
    const v = JSON.parse(text) as Partial<LeaseBody>;
    return typeof v.holder === 'string' && typeof v.expiresAt === 'number' ? (v as LeaseBody) : undefined;
  } catch {
    return undefined;
  }
}

/** Held by a process of this host that is gone (killed): no need to wait out its ttl. */
function deadHere(l: LeaseBody): boolean {
  if (l.host !== hostname() || typeof l.pid !== 'number' || l.pid === process.pid) return false;
  try {
    process.kill(l.pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

class Held implements BucketLease {
  lost = false;
  private readonly timer: NodeJS.Timeout;
  private renewing: Promise<void> | undefined;

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly key: string,
    private etag: string,
    ttl: number,
    put: (h: Record<string, string>) => Promise<string | undefined>,
    private readonly log: Logger | undefined,
  ) {
    this.timer = setInterval(() => {
      if (this.lost || this.renewing) return;
      this.renewing = put({ 'if-match': `"${this.etag}"` })
        .then((etag) => {
          if (etag) this.etag = etag;
          else this.markLost();
        })
        .catch(() => undefined) // a failed renewal is retried at the next beat; the ttl covers a few
        .finally(() => (this.renewing = undefined));
    }, Math.max(50, Math.floor(ttl / 3)));
    this.timer.unref();
  }

  private markLost(): void {
    this.lost = true;
    this.log?.warn({ lease: `s3://${this.bucket}/${this.key}` }, 'push lease taken over by another process (this one stalled past its ttl); finishing anyway');
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    await this.renewing;
    if (!this.lost) await this.client.delete(this.bucket, this.key).catch(() => undefined);
  }
}
