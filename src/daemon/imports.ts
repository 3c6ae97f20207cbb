/**
 * The daemon's `imports` folder: bundles dropped into it are imported into the store, then moved
 * to `done/`, or to `failed/` next to a `<name>.reason.txt` that says why. Self-contained: the
 * composition root starts it with the store and a logger and closes it on shutdown.
 *
 * A bundle is only touched once its size and mtime have stopped changing for `stabilityMs`
 * (a copy over the network may pause); names starting with "." and anything that does not end in
 * `.tar` or `.swiftbundle` are ignored, so `cp x.tar .x.tar.part && mv .x.tar.part x.tar` is the
 * safest way to drop one in. Imports run one at a time.
 */
import { promises as fsp } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from 'pino';
import { importBundle, type ImportResult, type TrustedKey } from '../bundle/index.js';
import { isSwiftFetchError, StorageError } from '../core/errors.js';

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

export async function startImportsWatcher(opts: ImportsWatcherOptions): Promise<ImportsWatcher> {
  const log = opts.logger?.child({ module: 'imports', dir: opts.dir });
  try {
    await fsp.mkdir(opts.dir, { recursive: true });
  } catch (e) {
    throw new StorageError(`cannot create the imports folder ${opts.dir}: ${(e as Error).message}`, 'ESF_STORAGE', { cause: e });
  }
  const root = resolve(opts.dir);
  const abort = new AbortController();
  const queued = new Set<string>();
  let chain: Promise<void> = Promise.resolve();
  let closed = false;

  const importOne = async (file: string): Promise<void> => {
    queued.delete(file);
    if (closed) return;
    if (!(await fsp.stat(file).then((s) => s.isFile(), () => false))) return; // moved away meanwhile
    log?.info({ file }, 'importing bundle');
    try {
      const result = await importBundle(file, { store: opts.store, signal: abort.signal, ...(opts.trust ? { trust: opts.trust } : {}), ...(opts.logger ? { logger: opts.logger } : {}) });
      const movedTo = await moveInto(file, join(opts.dir, 'done'));
      log?.info({ file: movedTo, models: result.models.map((m) => `${m.ref} (${m.commit})`) }, 'bundle imported');
      opts.onImported?.({ file, movedTo, result });
    } catch (e) {
      if (closed && abort.signal.aborted) {
        log?.info({ file }, 'import interrupted by shutdown; will retry on next start');
        return;
      }
      log?.warn({ file, err: (e as Error)?.message, code: (e as { code?: string })?.code }, 'bundle import failed');
      try {
        const movedTo = await moveInto(file, join(opts.dir, 'failed'));
        await fsp.writeFile(`${movedTo}.reason.txt`, reasonText(file, e));
        opts.onFailed?.({ file, movedTo, error: e });
      } catch (moveErr) {
        log?.error({ file, err: (moveErr as Error).message }, 'cannot move the failed bundle to failed/');
      }
    }
  };

  const enqueue = (file: string) => {
    // Only direct children: done/ and failed/ hold bundles we already handled.
    if (closed || queued.has(file) || resolve(dirname(file)) !== root || !isBundleName(basename(file))) return;
    queued.add(file);
    chain = chain.then(() => importOne(file)).catch(() => undefined);
  };

  const stability = opts.stabilityMs ?? 2_000;
  const watcher: FSWatcher = watch(opts.dir, {
    depth: 0,
    ignoreInitial: false,
    usePolling: opts.usePolling ?? false,
    interval: 500,
    // Only direct children that look like bundles; done/ and failed/ are never descended into.
    ignored: (p, stats) => p !== opts.dir && (basename(p).startsWith('.') || (stats?.isFile() === true && !isBundleName(basename(p)))),
    awaitWriteFinish: { stabilityThreshold: stability, pollInterval: Math.max(50, Math.min(500, Math.floor(stability / 4))) },
  });
  watcher.on('add', (p) => enqueue(p));
  watcher.on('change', (p) => enqueue(p));
  watcher.on('error', (e) => log?.warn({ err: (e as Error).message }, 'imports watcher error'));
  await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
  log?.info('watching for bundles');

  return {
    async close() {
      if (closed) return;
      closed = true;
      abort.abort(new Error('imports watcher closing'));
      await watcher.close();
      await chain;
    },
    async idle() {
      for (;;) {
        const c = chain;
        await c;
        if (c === chain && queued.size === 0) return;
      }
    },
  };
}
