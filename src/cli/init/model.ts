/**
 * One model an init waits for: its live state (for the progress lines and the timeout message) and
 * the two ways to get it without a daemon: the store's own record, or a pull of our own.
 */
import type { Logger } from 'pino';
import { IntegrityError, NotFoundError } from '../../core/errors.js';
import { formatRef, type ModelRef } from '../../core/ref.js';
import { formatBytes } from '../../core/units.js';
import { differenceError, pinnedRecord, recordDifferences, type LockOption, type Pinned } from '../../lock/index.js';
import { pullModel } from '../../pull/index.js';
import type { PublishRecord, Store } from '../../store/store.js';
import { verifyRecord } from '../../store/verify.js';

export interface Tracked {
  ref: ModelRef;
  label: string;
  via: 'store' | 'daemon' | 'self';
  state: string;
  bytesDone: number;
  bytesTotal: number;
  waitingFor?: string | undefined;
  path?: string;
  commit?: string;
  /** For the rate: bytes and time at the previous progress line. */
  lastBytes: number;
  lastAt: number;
  /** The lock entry it must match (`--lock`). */
  pinned?: Pinned;
}

/** What the daemon is asked for: a pinned model by its locked commit, so any daemon serves exactly that. */
export function daemonKey(t: Tracked): string {
  return t.pinned ? formatRef({ ...t.ref, revision: t.pinned.pin.commit }) : t.label;
}

export interface InitContext {
  store: Store;
  storeDir: string;
  stateDir: string;
  signal: AbortSignal;
  /** One line for the person watching (stderr, or a `log` event with --json). */
  say: (text: string) => void;
  log: Logger;
  verify: boolean;
  /** Why init may not pull from a hub itself (--no-self-pull, a read-only store); undefined: it may. */
  noSelfPull?: string | undefined;
  /** `--lock FILE [--locked]`, passed to its own pulls. */
  lock?: LockOption | undefined;
}

/**
 * The store's own answer, without any network: the record of a complete revision, or undefined.
 * Pinned: the record of the locked commit, when it holds every locked file with the locked hash.
 */
export async function fromStore(ctx: InitContext, t: Tracked): Promise<PublishRecord | undefined> {
  if (t.pinned) return pinnedRecord(ctx.store, t.ref, t.pinned.pin);
  let rec: PublishRecord;
  try {
    rec = await ctx.store.findRecord(t.ref, t.ref.revision);
  } catch (e) {
    if (e instanceof NotFoundError) return undefined;
    throw e;
  }
  return rec.complete ? rec : undefined;
}

/**
 * --lock: whatever way the model arrived (the store, a daemon, our own pull), the record must be
 * the locked commit with every locked file's SHA-256. Else exit 5, naming the file.
 */
export function checkLocked(t: Tracked, rec: PublishRecord): void {
  if (!t.pinned) return;
  const { pin, file } = t.pinned;
  const diff = rec.commit !== pin.commit ? [{ what: 'commit' as const, expected: pin.commit, found: rec.commit }] : recordDifferences(pin.files, rec.files);
  if (diff.length > 0) throw differenceError(pin, file, diff[0]!, 'in the store');
}

/** --verify: re-hash what the record promises. A mismatch is an integrity failure (exit 5). */
export async function checkRecord(ctx: InitContext, t: Tracked, rec: PublishRecord): Promise<void> {
  if (!ctx.verify) return;
  t.state = 'verifying';
  const problems = await verifyRecord(rec);
  if (problems.length > 0) {
    const p = problems[0]!;
    throw new IntegrityError(`${t.label}: ${problems.length} file(s) fail verification in ${rec.paths.plain}, e.g. ${p.path}: ${p.problem}`, {
      expected: p.expected, found: p.found, path: p.path,
    });
  }
}

export async function pullSelf(ctx: InitContext, t: Tracked): Promise<PublishRecord> {
  t.via = 'self';
  t.state = 'resolving';
  const res = await pullModel(t.ref, {
    store: ctx.storeDir,
    stateDir: ctx.stateDir,
    signal: ctx.signal,
    ...(ctx.lock ? { lock: ctx.lock } : {}),
    logger: ctx.log,
    onEvent: (e) => {
      if (e.type === 'resolved') {
        t.state = 'downloading';
        t.bytesTotal = e.bytesTotal;
      } else if (e.type === 'progress') {
        t.state = 'downloading';
        t.waitingFor = undefined;
        t.bytesDone = e.bytesDone;
        t.bytesTotal = e.bytesTotal;
      } else if (e.type === 'waiting') {
        t.state = 'waiting';
        t.waitingFor = e.holder;
      } else if (e.type === 'verifying') {
        t.state = 'verifying';
      }
    },
  });
  return res.record;
}

export function progressLine(t: Tracked, now: number): string {
  const pct = t.bytesTotal > 0 ? `${((100 * t.bytesDone) / t.bytesTotal).toFixed(1)}%` : '0.0%';
  const secs = Math.max(0.001, (now - t.lastAt) / 1000);
  const rate = Math.max(0, t.bytesDone - t.lastBytes) / secs;
  t.lastBytes = t.bytesDone;
  t.lastAt = now;
  const wait = t.state === 'waiting' && t.waitingFor ? ` (another process is downloading it: ${t.waitingFor})` : '';
  return `${t.label}: ${t.state} ${pct} (${formatBytes(t.bytesDone)} of ${formatBytes(t.bytesTotal)}) at ${formatBytes(rate)}/s via ${t.via}${wait}`;
}

export function missingSummary(items: Tracked[]): string {
  return items
    .filter((t) => t.path === undefined)
    .map((t) => `${t.label} (${t.state}, ${formatBytes(t.bytesDone)} of ${formatBytes(t.bytesTotal)})`)
    .join(', ');
}
