/**
 * Watches the models file and reports each new valid list. It watches the file's directory, not
 * the file, because none of the ways the file changes in practice modify it in place:
 *  - a Kubernetes ConfigMap volume swaps a `..data` symlink to a new timestamped directory
 *    (the file itself is a symlink through `..data` and never changes);
 *  - editors write a new file and rename it over the old one;
 *  - some tools delete and recreate it, so it is briefly missing.
 * Any event in the directory schedules a debounced re-read. A read that fails (missing file,
 * half-written YAML) keeps the last good list: a transient must never unpin models. A slow poll
 * backs the watcher up, and re-arms it if the directory itself went away.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from 'pino';
import { parseModelsFile, type ModelSpec } from './config.js';

export interface ModelsFileWatcher {
  /** The last good list (undefined until the file has been read successfully once). */
  readonly current: ModelSpec[] | undefined;
  /** Re-read now (also what every event does, debounced). */
  reload(): Promise<void>;
  close(): Promise<void>;
}

export interface WatchOptions {
  logger: Logger;
  onChange: (specs: ModelSpec[]) => void;
  env?: NodeJS.ProcessEnv;
  debounceMs?: number;
  /** Safety-net re-read interval; 0 disables. Default 30 s. */
  pollMs?: number;
}

export async function watchModelsFile(file: string, opts: WatchOptions): Promise<ModelsFileWatcher> {
  const log = opts.logger.child({ module: 'watch', file });
  const debounceMs = opts.debounceMs ?? 250;
  const dir = dirname(file);
  let current: ModelSpec[] | undefined;
  let lastHash: string | undefined;
  let lastProblem: string | undefined;
  let watcher: FSWatcher | undefined;
  let debounce: NodeJS.Timeout | undefined;
  let closed = false;
  let reading: Promise<void> | undefined;
  let again = false;

  /** Log a problem once while it persists, not on every event; another one (a new bad edit) is news. */
  const problem = (key: string, msg: string, extra: object) => {
    if (lastProblem === key) return;
    lastProblem = key;
    log.warn(extra, msg);
  };

  const readOnce = async () => {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      problem(`read:${code}`, code === 'ENOENT' ? 'models file missing; keeping the last list' : 'cannot read models file; keeping the last list', { code, models: current?.length ?? 0 });
      return;
    }
    const hash = createHash('sha256').update(text).digest('hex');
    if (hash === lastHash) return;
    let specs: ModelSpec[];
    try {
      specs = parseModelsFile(text, file, opts.env);
    } catch (e) {
      problem(`invalid:${hash}`, 'invalid models file; keeping the last list', { err: (e as Error).message, models: current?.length ?? 0 });
      return;
    }
    lastHash = hash;
    lastProblem = undefined;
    current = specs;
    log.info({ models: specs.map((s) => s.key) }, 'models file loaded');
    opts.onChange(specs);
  };

  // Serialise reads; an event during a read causes exactly one more read afterwards.
  const reload = async (): Promise<void> => {
    if (reading) {
      again = true;
      return reading;
    }
    reading = (async () => {
      do {
        again = false;
        await readOnce();
      } while (again && !closed);
    })().finally(() => (reading = undefined));
    return reading;
  };

  const schedule = () => {
    if (closed) return;
    if (debounce) clearTimeout(debounce);
    debounce = setTimeout(() => void reload(), debounceMs);
  };

  const arm = async () => {
    if (closed || watcher) return;
    try {
      if (!(await stat(dir)).isDirectory()) return;
    } catch {
      return; // the poll re-arms once the directory exists
    }
    // close() or another arm() may have run during the await.
    if (closed || watcher) return;
    const w = watch(dir, {
      ignoreInitial: true,
      // The directory's own entries are enough: `..data`, the timestamped dirs and the file.
      depth: 0,
      followSymlinks: false,
      // We debounce and re-read ourselves; chokidar's own atomic-write smoothing would only delay.
      atomic: false,
    });
    w.on('all', (event, p) => {
      log.debug({ event, path: basename(p) }, 'models dir event');
      if (event === 'unlinkDir' && p === dir) return void rearm();
      schedule();
    });
    w.on('error', (e) => {
      log.warn({ err: (e as Error).message }, 'watcher error; re-arming');
      void rearm();
    });
    watcher = w;
    // Events before chokidar's initial scan completes are lost: wait for it, then re-read once
    // to catch whatever changed while we were arming.
    await new Promise<void>((resolve) => {
      w.once('ready', resolve);
      w.once('error', () => resolve());
    });
    schedule();
  };

  const rearm = async () => {
    const w = watcher;
    watcher = undefined;
    await w?.close().catch(() => undefined);
    await arm();
    schedule();
  };

  await readOnce();
  if (current === undefined) log.warn('models file not readable at start; watching for it');
  await arm();
  const pollMs = opts.pollMs ?? 30_000;
  const poll = pollMs > 0
    ? setInterval(() => {
        if (!watcher) void arm();
        void reload();
      }, pollMs)
    : undefined;
  poll?.unref();

  return {
    get current() {
      return current;
    },
    reload,
    async close() {
      closed = true;
      if (debounce) clearTimeout(debounce);
      if (poll) clearInterval(poll);
      await watcher?.close().catch(() => undefined);
      watcher = undefined;
      await reading;
    },
  };
}
