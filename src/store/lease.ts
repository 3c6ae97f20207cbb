/**
 * Leases on a shared volume (NFS, CephFS, local disk alike): one file per lease, created with
 * O_EXCL, renewed by a heartbeat that replaces its content, judged expired by the time it was last
 * renewed. No flock and no SQLite: both are unreliable on network filesystems.
 *
 * Expiry is deliberately conservative. A lease counts as expired when either
 *  - its `renewedAt + ttlMs` AND its file mtime + ttlMs are both older than now minus a safety
 *    margin (two independent clocks must agree: the holder's, written in the file, and the file
 *    server's, stamped on the mtime), or
 *  - this process has watched the file's content stay unchanged for longer than ttl + margin on its
 *    own monotonic clock (immune to clock skew; needs repeated calls, which waiters make anyway), or
 *  - its holder is dead: the lease names its holder by boot id, PID namespace, pid and the pid's
 *    start time (state/host.ts), and a contender in the same boot and PID namespace sees that no
 *    such process runs any more (a SIGKILLed pull frees its lease at once, not after its ttl).
 *    Everyone else - other nodes, other pods, leases written by older versions - waits for expiry.
 *
 * Takeover of an expired lease is race-free between any number of contenders: they first race for
 * a create-exclusive marker named after the stale content they judged (one wins), the winner
 * checks the lease still holds exactly those bytes, renames it to a unique tombstone and removes
 * it, then competes with everyone else through the ordinary create-exclusive path.
 *
 * Claims make leases coarse. A pull of a revision with 20,000 files cannot afford 20,000 heartbeats
 * (each a read, a write and a rename every ttl/3: ~2,000 renames a second, and as many descriptors
 * open at once). A held lease therefore lends its liveness to claims: a claim is an ordinary lease
 * file, created exclusively under its own name (`blob-<hash>`), that is never renewed and names the
 * lease it belongs to (its group) and that lease's nonce. A claim is live exactly while its group
 * is: the group file is there, holds the same acquisition (nonce), and is not expired by the rules
 * above (or its holder is dead). One heartbeat keeps any number of claims alive; a dead or
 * released group frees all its claims at once. Claims are taken over like any lease (the marker
 * protocol), and a claim is written without an fsync: a torn one is judged by its mtime.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { dirname, join } from 'node:path';
import { StorageError, UsageError } from '../core/errors.js';
import { ownIdentity, processLiveness } from '../state/host.js';

export interface LeaseInfo {
  holder: string;
  host: string;
  pid: number;
  acquiredAt: number;
  renewedAt: number;
  ttlMs: number;
  /** Who can judge `pid` (see state/host.ts); absent in leases written by older versions. */
  boot?: string;
  pidns?: string;
  pidStart?: string;
  /** Set on a claim (see above): the lease whose heartbeat keeps it alive. */
  group?: string;
}

export interface Lease {
  readonly name: string;
  readonly holder: string;
  /** True once the heartbeat found the lease gone, taken over, or could not renew it in time. */
  readonly lost: boolean;
  /** Stop the heartbeat and remove the lease file if it is still ours. Idempotent. */
  release(): Promise<void>;
  /**
   * Claim `name` under this lease (see above): true when it is now ours, false when a live holder
   * has it. No timer and no open descriptor per claim. Released with `unclaim` or with the lease.
   */
  claim(name: string): Promise<boolean>;
  /** Give one claim back (removes its file if still ours). Idempotent. */
  unclaim(name: string): Promise<void>;
}

export interface AcquireOptions {
  holder: string;
  /** How long a lease lives without a renewal. Default 30 s. */
  ttlMs?: number;
  /** How often the holder renews. Default ttlMs / 3. */
  heartbeatMs?: number;
  /** Called once if the lease is lost while held (the holder should stop writing). */
  onLost?: () => void;
}

export interface LeaseEntry {
  name: string;
  info: LeaseInfo;
  expired: boolean;
}

export const DEFAULT_LEASE_TTL_MS = 30_000;
const SUFFIX = '.lease';
const NAME_RE = /^(?!\.)[A-Za-z0-9._@+=-]{1,200}$/;

interface StoredLease extends LeaseInfo {
  /** Unique per acquisition: tells our lease apart from a later one by the same holder. */
  nonce: string;
  /** On a claim: the nonce of its group's acquisition. */
  groupNonce?: string;
}

/** The lease directory's files: the lease itself, plus transient `.tmp` and `.stale` files. */
function leasePath(dir: string, name: string): string {
  if (!NAME_RE.test(name) || name.includes('..')) {
    throw new UsageError(`invalid lease name ${JSON.stringify(name)}: expected letters, digits and . _ @ + = - only (no slashes)`, 'ESF_BAD_LEASE_NAME');
  }
  return join(dir, name + SUFFIX);
}

/** Margin added to the ttl before another process may take a lease over (clock skew, slow I/O). */
function safetyMargin(ttlMs: number): number {
  return Math.min(10_000, Math.max(250, Math.floor(ttlMs / 2)));
}

function nonce(): string {
  return randomBytes(9).toString('base64url');
}

// Per-process memory of what each lease file looked like and when we first saw it that way.
const observed = new Map<string, { content: string; since: number }>();

function observe(path: string, content: string): number {
  const now = performance.now();
  const prev = observed.get(path);
  if (prev && prev.content === content) return now - prev.since;
  observed.set(path, { content, since: now });
  if (observed.size > 10_000) observed.delete(observed.keys().next().value!);
  return 0;
}

interface Snapshot {
  content: string;
  info: LeaseInfo;
  nonce: string | undefined;
  groupNonce?: string;
  mtimeMs: number;
}

async function readSnapshot(path: string): Promise<Snapshot | undefined> {
  let content: string;
  let mtimeMs: number;
  try {
    // Read then stat: if the file is swapped in between, the next poll sees the new one.
    content = await fsp.readFile(path, 'utf8');
    mtimeMs = (await fsp.stat(path)).mtimeMs;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new StorageError(`cannot read lease ${path}: ${(e as Error).message}`, 'ESF_LEASE_IO', { cause: e });
  }
  const parsed = parseLease(content);
  if (parsed) return { content, info: parsed.info, nonce: parsed.nonce, ...(parsed.groupNonce ? { groupNonce: parsed.groupNonce } : {}), mtimeMs };
  // Being written right now (create-exclusive happens before the write) or torn: judge it by its
  // mtime and the default ttl, like a lease whose holder we cannot name.
  return {
    content,
    info: { holder: '?', host: '?', pid: 0, acquiredAt: mtimeMs, renewedAt: mtimeMs, ttlMs: DEFAULT_LEASE_TTL_MS },
    nonce: undefined,
    mtimeMs,
  };
}

function parseLease(content: string): { info: LeaseInfo; nonce: string; groupNonce?: string } | undefined {
  try {
    const v = JSON.parse(content) as Partial<StoredLease>;
    if (
      typeof v.holder === 'string' && typeof v.host === 'string' && typeof v.pid === 'number' &&
      typeof v.acquiredAt === 'number' && typeof v.renewedAt === 'number' && typeof v.ttlMs === 'number' &&
      typeof v.nonce === 'string'
    ) {
      const info: LeaseInfo = { holder: v.holder, host: v.host, pid: v.pid, acquiredAt: v.acquiredAt, renewedAt: v.renewedAt, ttlMs: v.ttlMs };
      for (const k of ['boot', 'pidns', 'pidStart'] as const) if (typeof v[k] === 'string') info[k] = v[k];
      if (typeof v.group === 'string' && typeof v.groupNonce === 'string' && NAME_RE.test(v.group)) {
        info.group = v.group;
        return { info, nonce: v.nonce, groupNonce: v.groupNonce };
      }
      return { info, nonce: v.nonce };
    }
  } catch {
    /* torn or empty */
  }
  return undefined;
}

/** Groups judged during one listing: thousands of claims share a handful of groups. */
type GroupVerdicts = Map<string, Promise<boolean>>;

/**
 * Whether a lease may be taken over: it expired, or its holder is known to be dead (see above).
 * A claim is judged by its group: gone, re-acquired (another nonce) or itself expired.
 */
async function isExpired(path: string, snap: Snapshot, verdicts?: GroupVerdicts): Promise<boolean> {
  if (snap.info.group === undefined) return isExpiredOwn(path, snap);
  if (processLiveness(snap.info) === 'dead') return true;
  const gpath = join(dirname(path), snap.info.group + SUFFIX);
  const key = `${gpath}\0${snap.groupNonce}`;
  let v = verdicts?.get(key);
  if (!v) {
    v = readSnapshot(gpath).then((g) => g === undefined || g.nonce !== snap.groupNonce || g.info.group !== undefined || isExpiredOwn(gpath, g));
    verdicts?.set(key, v);
  }
  return v;
}

function isExpiredOwn(path: string, snap: Snapshot): boolean {
  const ttl = snap.info.ttlMs;
  const margin = safetyMargin(ttl);
  const now = Date.now();
  const byClocks = snap.info.renewedAt + ttl + margin < now && snap.mtimeMs + ttl + margin < now;
  const byObservation = observe(path, snap.content) > ttl + margin;
  return byClocks || byObservation || processLiveness(snap.info) === 'dead';
}

/** Current holder of a lease, or undefined when there is none. Includes expired leases. */
export async function readLease(dir: string, name: string): Promise<LeaseInfo | undefined> {
  const snap = await readSnapshot(leasePath(dir, name));
  return snap?.info;
}

/** Whether a lease exists and is held by a live holder. */
export async function isLeaseLive(dir: string, name: string): Promise<boolean> {
  const path = leasePath(dir, name);
  const snap = await readSnapshot(path);
  return snap !== undefined && !(await isExpired(path, snap));
}

/** Every lease file in `dir` with its holder and whether it has expired. */
export async function listLeases(dir: string): Promise<LeaseEntry[]> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new StorageError(`cannot list leases in ${dir}: ${(e as Error).message}`, 'ESF_LEASE_IO', { cause: e });
  }
  const out: LeaseEntry[] = [];
  const verdicts: GroupVerdicts = new Map();
  for (const f of names) {
    if (!f.endsWith(SUFFIX)) continue;
    const name = f.slice(0, -SUFFIX.length);
    if (!NAME_RE.test(name)) continue;
    const path = join(dir, f);
    const snap = await readSnapshot(path);
    if (snap) out.push({ name, info: snap.info, expired: await isExpired(path, snap, verdicts) });
  }
  return out;
}

async function createExclusive(path: string, content: string, sync = true): Promise<boolean> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(path, 'wx', 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new StorageError(`cannot create lease ${path}: ${(e as Error).message}`, 'ESF_LEASE_IO', { cause: e });
  }
  try {
    await fh.writeFile(content);
    if (sync) await fh.sync();
  } finally {
    await fh.close();
  }
  return true;
}

/**
 * Move an expired lease out of the way. Returns true when the entry is gone (we removed the stale
 * one, or someone else already did); false when someone else is taking it over, or it turned out
 * to be live after all.
 *
 * Contenders that judged the same stale content first race for a marker named after that
 * content (create-exclusive): exactly one proceeds. A slow contender that only gets the marker
 * after the winner is done finds different content (or none) and stands down, so a fresh lease is
 * never renamed away by someone who judged an older one.
 */
async function takeOver(path: string, stale: Snapshot): Promise<boolean> {
  const marker = `${path}.${createHash('sha256').update(stale.content).digest('hex').slice(0, 20)}.takeover`;
  if (!(await createExclusive(marker, JSON.stringify({ host: ownIdentity().host, pid: process.pid, at: Date.now() })))) {
    await clearAbandonedMarker(marker, stale.info.ttlMs);
    return false;
  }
  try {
    const now = await readSnapshot(path);
    if (now === undefined) return true;
    if (now.content !== stale.content) return false;
    const tomb = `${path}.${nonce()}.stale`;
    try {
      await fsp.rename(path, tomb);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return true;
      throw new StorageError(`cannot take over lease ${path}: ${(e as Error).message}`, 'ESF_LEASE_IO', { cause: e });
    }
    const grabbed = await fsp.readFile(tomb, 'utf8').catch(() => undefined);
    if (grabbed !== stale.content) {
      // Cannot happen while every writer follows this protocol; if it does, give the lease back.
      await fsp.link(tomb, path).catch(() => {});
      await fsp.unlink(tomb).catch(() => {});
      return false;
    }
    await fsp.unlink(tomb).catch(() => {});
    return true;
  } finally {
    await fsp.unlink(marker).catch(() => {});
  }
}

/** A takeover marker left by a process that died mid-takeover would block the lease forever. */
async function clearAbandonedMarker(marker: string, ttlMs: number): Promise<void> {
  const st = await fsp.stat(marker).catch(() => undefined);
  const limit = Math.max(5_000, ttlMs);
  if (!st || Date.now() - st.mtimeMs < limit) return;
  const tomb = `${marker}.${nonce()}.stale`;
  if (!(await fsp.rename(marker, tomb).then(() => true, () => false))) return;
  // The rename keeps the inode's mtime: if what we grabbed is young, it was someone's live marker.
  const grabbed = await fsp.stat(tomb).catch(() => undefined);
  if (grabbed && Date.now() - grabbed.mtimeMs < limit) await fsp.link(tomb, marker).catch(() => {});
  await fsp.unlink(tomb).catch(() => {});
}

/**
 * Try to take the lease `name` in `dir` (created if missing). Resolves to the held Lease, or to
 * undefined when a live holder (another process, or another acquisition in this one) has it.
 */
export async function tryAcquireLease(dir: string, name: string, opts: AcquireOptions): Promise<Lease | undefined> {
  const path = leasePath(dir, name);
  const ttlMs = opts.ttlMs ?? DEFAULT_LEASE_TTL_MS;
  if (!(ttlMs > 0)) throw new UsageError(`lease ttl must be positive, got ${ttlMs}`);
  const heartbeatMs = opts.heartbeatMs ?? Math.max(50, Math.floor(ttlMs / 3));
  await fsp.mkdir(dir, { recursive: true }).catch((e: NodeJS.ErrnoException) => {
    throw new StorageError(`cannot create lease directory ${dir}: ${e.message}`, 'ESF_LEASE_IO', { cause: e });
  });

  const now = Date.now();
  const me = ownIdentity();
  const stored: StoredLease = {
    holder: opts.holder,
    host: me.host,
    pid: me.pid,
    acquiredAt: now,
    renewedAt: now,
    ttlMs,
    nonce: nonce(),
    ...(me.boot && me.pidns && me.pidStart ? { boot: me.boot, pidns: me.pidns, pidStart: me.pidStart } : {}),
  };
  const created = await createOrTakeOver(path, () => {
    stored.acquiredAt = stored.renewedAt = Date.now();
    return JSON.stringify(stored);
  }, true);
  return created ? new HeldLease(dir, path, name, stored, heartbeatMs, opts.onLost) : undefined;
}

/**
 * Create `path` exclusively with `content()`, moving an expired lease out of the way first if
 * need be. Two rounds: the second one after the takeover.
 */
async function createOrTakeOver(path: string, content: () => string, sync: boolean): Promise<boolean> {
  for (let round = 0; round < 2; round++) {
    if (await createExclusive(path, content(), sync)) {
      observed.delete(path);
      return true;
    }
    const snap = await readSnapshot(path);
    if (snap === undefined) continue; // released between our create and our read: try again
    if (!(await isExpired(path, snap))) return false;
    if (!(await takeOver(path, snap))) return false;
  }
  return false;
}

class HeldLease implements Lease {
  readonly name: string;
  readonly holder: string;
  private isLost = false;
  private released = false;
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  /** Monotonic time of the last successful renewal (or of the acquisition). */
  private lastRenew = performance.now();

  /** Claims held under this lease: name -> the claim's nonce (to recognise its file as ours). */
  private readonly claims = new Map<string, string>();

  constructor(
    private readonly dir: string,
    private readonly path: string,
    name: string,
    private readonly stored: StoredLease,
    heartbeatMs: number,
    private readonly onLost: (() => void) | undefined,
  ) {
    this.name = name;
    this.holder = stored.holder;
    this.timer = setInterval(() => {
      if (!this.renewing) this.renewing = this.renew().finally(() => (this.renewing = undefined));
    }, heartbeatMs);
    // A forgotten lease must not keep a process alive; its expiry cleans up after us.
    this.timer.unref();
  }

  get lost(): boolean {
    return this.isLost;
  }

  private markLost(): void {
    if (this.isLost) return;
    this.isLost = true;
    this.stop();
    try {
      this.onLost?.();
    } catch {
      /* the callback's problem */
    }
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Whether the lease file is still ours; throws on I/O errors other than "gone". */
  private async ownsFile(): Promise<boolean> {
    let content: string;
    try {
      content = await fsp.readFile(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
    return parseLease(content)?.nonce === this.stored.nonce;
  }

  private async renew(): Promise<void> {
    if (this.released || this.isLost) return;
    // Others may take over after ttl + margin; once we are past the ttl ourselves, renewing could
    // clobber a new holder's file, so we give up instead.
    if (performance.now() - this.lastRenew > this.stored.ttlMs) return this.markLost();
    try {
      if (!(await this.ownsFile())) return this.markLost();
      this.stored.renewedAt = Date.now();
      const tmp = `${this.path}.${nonce()}.tmp`;
      await fsp.writeFile(tmp, JSON.stringify(this.stored));
      if (this.released) {
        await fsp.unlink(tmp).catch(() => {});
        return;
      }
      await fsp.rename(tmp, this.path);
      this.lastRenew = performance.now();
    } catch {
      // A transient I/O error: the next beat retries; the ttl check above bounds how long we try.
    }
  }

  async claim(name: string): Promise<boolean> {
    if (this.released || this.isLost) return false;
    if (this.claims.has(name)) return true;
    const path = leasePath(this.dir, name);
    const { nonce: groupNonce, ...info } = this.stored;
    const own = nonce();
    const content = JSON.stringify({ ...info, acquiredAt: Date.now(), renewedAt: Date.now(), nonce: own, group: this.name, groupNonce });
    // No fsync: the group's file carries the liveness, and a torn claim is judged by its mtime.
    if (!(await createOrTakeOver(path, () => content, false))) return false;
    this.claims.set(name, own);
    return true;
  }

  async unclaim(name: string): Promise<void> {
    const own = this.claims.get(name);
    if (own === undefined) return;
    this.claims.delete(name);
    const path = leasePath(this.dir, name);
    const now = await fsp.readFile(path, 'utf8').catch(() => undefined);
    if (now !== undefined && parseLease(now)?.nonce === own) await fsp.unlink(path).catch(() => {});
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.stop();
    await this.renewing;
    // Claims first: with the group gone they would be free anyway, but the files would stay.
    // A few at a time, so thousands of claims never hold thousands of descriptors.
    const names = [...this.claims.keys()];
    for (let i = 0; i < names.length; i += 32) await Promise.all(names.slice(i, i + 32).map((n) => this.unclaim(n)));
    if (this.isLost) return;
    if (await this.ownsFile().catch(() => false)) await fsp.unlink(this.path).catch(() => {});
  }
}
