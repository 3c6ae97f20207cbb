/**
 * The daemon's `imports` folder: bundles dropped into it are imported into the store, then moved
 * to `done/`, or to `failed/` next to a `<name>.reason.txt` that says why. Self-contained: the
 * composition root starts it with the store and a logger and closes it on shutdown.
 *
 * A bundle is only touched once its size, mtime and inode have stopped changing for `stabilityMs`.
 * A copy over the network may pause for longer: an import that fails while the file changes again
 * is not counted as a failure (the file settles and is tried again), and a bundle already moved to
 * failed/ that changes afterwards (its writer still held it, or a good copy replaced it) is moved
 * back and tried again. Names starting with "." and anything that does not end in `.tar` or
 * `.swiftbundle` are ignored, so `cp x.tar .x.tar.part && mv .x.tar.part x.tar` is the safest way
 * to drop one in. Imports run one at a time.
 */
import { promises as fsp } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from 'pino';
import { importBundle, type ImportResult, type TrustedKey } from '../bundle/index.js';
import { isSwiftFetchError, StorageError } from '../core/errors.js';
import { sleep } from '../core/sleep.js';

export interface ImportsWatcherOptions {
  /** The watched folder (created if missing). */
  dir: string;
  /** The store bundles are imported into. */
  store: string;
  /** Import only bundles signed by one of these keys (`imports.trust`); the rest go to failed/ (exit code 5). */
  trust?: readonly TrustedKey[];
  logger?: Logger;
  /** After a bundle was imported and moved to done/. */
  onImported?: (info: { file: string; movedTo: string; result: ImportResult }) => void;
  /** After a bundle failed and was moved to failed/. */
  onFailed?: (info: { file: string; movedTo: string; error: unknown }) => void;
  /** How long a file must stay unchanged before it is imported. Default 2 s. */
  stabilityMs?: number;
  /** Poll the folder instead of using inotify (network filesystems). Default false. */
  usePolling?: boolean;
}

export interface ImportsWatcher {
  /** Stop watching; an import in flight is aborted (its bundle stays where it is, to be retried). */
  close(): Promise<void>;
  /** Resolves when no import is queued or running (tests, shutdown). */
  idle(): Promise<void>;
}

const BUNDLE_EXT = /\.(tar|swiftbundle)$/i;

export function isBundleName(name: string): boolean {
  return !name.startsWith('.') && BUNDLE_EXT.test(name);
}

/** Move `file` into `dir`, never overwriting: a name already there gets a time suffix. */
async function moveInto(file: string, dir: string): Promise<string> {
  await fsp.mkdir(dir, { recursive: true });
  const name = basename(file);
  let dest = join(dir, name);
  if (await fsp.lstat(dest).then(() => true, () => false)) {
    dest = join(dir, `${name}.${new Date().toISOString().replace(/[:.]/g, '-')}`);
  }
  await fsp.rename(file, dest);
  return dest;
}

function reasonText(file: string, e: unknown): string {
  const lines = [
    `bundle: ${basename(file)}`,
    `failed: ${new Date().toISOString()}`,
    `error: ${(e as Error)?.message ?? String(e)}`,
  ];
  if (isSwiftFetchError(e)) lines.push(`code: ${e.code}`, `exit code: ${e.exitCode}`);
  const details = e as { expected?: string; found?: string; path?: string };
  if (details?.path) lines.push(`entry: ${details.path}`);
  if (details?.expected) lines.push(`expected: ${details.expected}`, `found: ${details.found ?? '?'}`);
  return lines.join('\n') + '\n';
}

/** What says a file changed: size, modification time and inode (a replaced file is a new one). */
interface FileStamp {
  size: number;
  mtimeMs: number;
  ino: number;
}

async function stampOf(file: string): Promise<FileStamp | undefined> {
  try {
    const st = await fsp.stat(file);
    return st.isFile() ? { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino } : undefined;
  } catch {
    return undefined;
  }
}

function sameStamp(a: FileStamp, b: FileStamp): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino;
}

/** Failed bundles watched for a change (a copy that went on after a pause, a replaced file); the oldest are forgotten past this. */
const MAX_WATCHED_FAILURES = 256;

/**
 * The folder's queue: files settle (stop changing), then are imported one at a time; failures go
 * to failed/ and are watched for a change that makes them worth another try.
 */
class ImportsQueue {
  private readonly root: string;
  private readonly abort = new AbortController();
  private readonly stability: number;
  readonly poll: number;
  private readonly settling = new Set<string>();
  private readonly queued = new Set<string>();
  /** Bundles this queue moved to failed/: where they came from, and how they were then. */
  private readonly failures = new Map<string, { original: string; stamp: FileStamp }>();
  private readonly log: Logger | undefined;
  private rechecking = false;
  chain: Promise<void> = Promise.resolve();
  closed = false;

  constructor(private readonly opts: ImportsWatcherOptions) {
    this.root = resolve(opts.dir);
    this.log = opts.logger?.child({ module: 'imports', dir: opts.dir });
    this.stability = opts.stabilityMs ?? 2_000;
    this.poll = Math.max(50, Math.min(500, Math.floor(this.stability / 4)));
  }

  get busy(): boolean {
    return this.queued.size > 0 || this.settling.size > 0;
  }

  /** A watcher event for `file`: a direct child that looks like a bundle is settled, then queued. */
  candidate(file: string): void {
    // Only direct children: done/ and failed/ hold bundles we already handled.
    if (this.closed || resolve(dirname(file)) !== this.root || !isBundleName(basename(file))) return;
    void this.settle(file);
  }

  /** Resolves with the file's stamp once it has not changed for `stability` ms; undefined when it went away or we close. */
  private async stable(file: string, from?: FileStamp): Promise<FileStamp | undefined> {
    let last = from ?? (await stampOf(file));
    let since = Date.now();
    while (last && !this.closed) {
      await sleep(this.poll, this.abort.signal).catch(() => undefined);
      const now = await stampOf(file);
      if (!now || !sameStamp(now, last)) {
        last = now;
        since = Date.now();
      } else if (Date.now() - since >= this.stability) return last;
    }
    return undefined;
  }

  /**
   * Wait until `file` has not changed (size, mtime, inode) for `stability` ms, then queue it. A
   * writer may pause for longer than that: an import that fails while the file changes again is
   * not a failure (importOne), and a failed bundle that changes later is tried again (recheck).
   */
  private async settle(file: string): Promise<void> {
    if (this.closed || this.settling.has(file) || this.queued.has(file)) return;
    this.settling.add(file);
    try {
      const stamp = await this.stable(file);
      if (stamp && !this.closed) {
        this.queued.add(file);
        this.chain = this.chain.then(() => this.importOne(file, stamp)).catch(() => undefined);
      }
    } finally {
      this.settling.delete(file);
    }
  }

  private async importOne(file: string, stamp: FileStamp): Promise<void> {
    this.queued.delete(file);
    if (this.closed) return;
    const now = await stampOf(file);
    if (!now) return; // moved away meanwhile
    if (!sameStamp(now, stamp)) return void this.settle(file); // written to again while it waited in line
    const { opts, log } = this;
    log?.info({ file }, 'importing bundle');
    try {
      const result = await importBundle(file, { store: opts.store, signal: this.abort.signal, ...(opts.trust ? { trust: opts.trust } : {}), ...(opts.logger ? { logger: opts.logger } : {}) });
      const movedTo = await moveInto(file, join(opts.dir, 'done'));
      log?.info({ file: movedTo, models: result.models.map((m) => `${m.ref} (${m.commit})`) }, 'bundle imported');
      opts.onImported?.({ file, movedTo, result });
    } catch (e) {
      if (this.closed && this.abort.signal.aborted) {
        log?.info({ file }, 'import interrupted by shutdown; will retry on next start');
        return;
      }
      const after = await stampOf(file);
      if (after && !sameStamp(after, stamp)) {
        // Still being written: what failed was a part of it.
        log?.info({ file, err: (e as Error)?.message }, 'bundle changed while it was imported; waiting for it to settle');
        return void this.settle(file);
      }
      await this.fail(file, e, after ?? stamp);
    }
  }

  private async fail(file: string, e: unknown, stamp: FileStamp): Promise<void> {
    this.log?.warn({ file, err: (e as Error)?.message, code: (e as { code?: string })?.code }, 'bundle import failed');
    try {
      const movedTo = await moveInto(file, join(this.opts.dir, 'failed'));
      await fsp.writeFile(`${movedTo}.reason.txt`, reasonText(file, e));
      this.failures.set(movedTo, { original: file, stamp });
      if (this.failures.size > MAX_WATCHED_FAILURES) this.failures.delete(this.failures.keys().next().value!);
      this.opts.onFailed?.({ file, movedTo, error: e });
    } catch (moveErr) {
      this.log?.error({ file, err: (moveErr as Error).message }, 'cannot move the failed bundle to failed/');
    }
  }

  /**
   * A failed bundle that changed since it failed (the copy went on after a long pause and its
   * writer still held the file, or someone put a good copy in its place) goes back into the
   * folder once it is stable again, to be imported anew; its reason file goes.
   */
  async recheck(): Promise<void> {
    if (this.rechecking) return;
    this.rechecking = true;
    try {
      for (const [movedTo, f] of [...this.failures]) {
        if (this.closed) return;
        const now = await stampOf(movedTo);
        if (now && sameStamp(now, f.stamp)) continue;
        this.failures.delete(movedTo);
        if (now) void this.retry(movedTo, f.original, now).catch((e: unknown) => this.log?.warn({ file: movedTo, err: (e as Error).message }, 'cannot retry a changed failed bundle'));
      }
    } finally {
      this.rechecking = false;
    }
  }

  private async retry(movedTo: string, original: string, changed: FileStamp): Promise<void> {
    // Stable first, where it is: moving a file that is still being written changes nothing for its writer.
    if (!(await this.stable(movedTo, changed)) || this.closed) return;
    const back = (await stampOf(original)) ? join(this.opts.dir, `retry-${Date.now()}-${basename(original)}`) : original;
    await fsp.rename(movedTo, back);
    await fsp.rm(`${movedTo}.reason.txt`, { force: true });
    this.log?.info({ file: back, was: movedTo }, 'a failed bundle changed: trying it again');
    void this.settle(back);
  }

  close(): void {
    this.closed = true;
    this.abort.abort(new Error('imports watcher closing'));
  }
}

export async function startImportsWatcher(opts: ImportsWatcherOptions): Promise<ImportsWatcher> {
  const log = opts.logger?.child({ module: 'imports', dir: opts.dir });
  try {
    await fsp.mkdir(opts.dir, { recursive: true });
  } catch (e) {
    throw new StorageError(`cannot create the imports folder ${opts.dir}: ${(e as Error).message}`, 'ESF_STORAGE', { cause: e });
  }
  const queue = new ImportsQueue(opts);
  const rechecks = setInterval(() => void queue.recheck(), Math.max(queue.poll, Math.floor((opts.stabilityMs ?? 2_000) / 2)));
  rechecks.unref();
  const watcher: FSWatcher = watch(opts.dir, {
    depth: 0,
    ignoreInitial: false,
    usePolling: opts.usePolling ?? false,
    interval: 500,
    // Only direct children that look like bundles; done/ and failed/ are never descended into.
    ignored: (p, stats) => p !== opts.dir && (basename(p).startsWith('.') || (stats?.isFile() === true && !isBundleName(basename(p)))),
  });
  watcher.on('add', (p) => queue.candidate(p));
  watcher.on('change', (p) => queue.candidate(p));
  watcher.on('error', (e) => log?.warn({ err: (e as Error).message }, 'imports watcher error'));
  await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
  log?.info('watching for bundles');

  return {
    async close() {
      if (queue.closed) return;
      clearInterval(rechecks);
      queue.close();
      await watcher.close();
      await queue.chain;
    },
    async idle() {
      for (;;) {
        const c = queue.chain;
        await c;
        if (c === queue.chain && !queue.busy) return;
        if (c === queue.chain) await sleep(queue.poll);
      }
    },
  };
}
