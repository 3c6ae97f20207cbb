import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { NotFoundError, StorageError, UsageError } from '../core/errors.js';
import { createLogger, LOG_LEVELS } from '../core/log.js';
import { defaultStateDir, defaultStoreDir, expandHome } from '../daemon/defaults.js';

/** Options every command shares, read from the root program. */
export interface GlobalOptions {
  store: string;
  stateDir: string;
  json: boolean;
  quiet: boolean;
  logLevel: string;
}

export function globals(cmd: Command, env: NodeJS.ProcessEnv = process.env): GlobalOptions {
  const o = cmd.optsWithGlobals<{ store?: string; stateDir?: string; json?: boolean; quiet?: boolean; logLevel?: string; verbose?: boolean }>();
  const logLevel = o.logLevel ?? env.SWIFT_FETCH_LOG_LEVEL ?? (o.verbose ? 'info' : 'warn');
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(`log level ${JSON.stringify(logLevel)} (from ${o.logLevel ? '--log-level' : 'SWIFT_FETCH_LOG_LEVEL'}): expected one of ${LOG_LEVELS.join(', ')}`);
  }
  return {
    store: resolve(expandHome(o.store ?? defaultStoreDir(env), env)),
    stateDir: resolve(expandHome(o.stateDir ?? env.SWIFT_FETCH_STATE_DIR ?? defaultStateDir(env), env)),
    json: Boolean(o.json),
    quiet: Boolean(o.quiet),
    logLevel,
  };
}

/**
 * The store directory a command is about to use, checked before anything touches it: a path that
 * is a file, or lies under one, is a storage error (6) with one line, not a stack trace from deep
 * inside a read. With `mustExist` (commands that only read), a store that is not there is "not
 * found" (3) rather than an empty answer that looks like success.
 */
export function checkStore(dir: string, opts: { mustExist?: boolean } = {}): string {
  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      if (opts.mustExist) throw new NotFoundError(`no store at ${dir}: nothing was pulled there (give --store DIR or set SWIFT_FETCH_STORE)`, 'ESF_NO_STORE');
      return dir;
    }
    if (code === 'ENOTDIR') throw new StorageError(`the store ${dir} cannot be a directory: a part of its path is a file`, 'ESF_STORE_NOT_DIR');
    throw new StorageError(`cannot use the store ${dir}: ${code ?? (e as Error).message}`, 'ESF_STORAGE', { cause: e });
  }
  if (!isDir) throw new StorageError(`the store ${dir} is a file, not a directory`, 'ESF_STORE_NOT_DIR');
  return dir;
}

let rootLogger: Logger | undefined;
export function logger(level: string): Logger {
  rootLogger ??= createLogger(level);
  return rootLogger;
}

/**
 * Why a command stopped before its work was done: a signal (Ctrl-C, SIGTERM) or its stdout closing
 * under it (`swift-fetch pull ... | head`). Used as the abort reason, so it comes back out of
 * whatever was cancelled, and main.ts turns it into 128 + the signal's number.
 */
export class Interrupted extends Error {
  constructor(readonly why: 'SIGINT' | 'SIGTERM' | 'EPIPE') {
    super(why === 'EPIPE' ? 'stdout was closed' : 'interrupted');
    this.name = 'Interrupted';
  }

  /** As a shell reports a process killed by the signal (EPIPE stands for SIGPIPE). */
  get exitCode(): number {
    return 128 + { SIGINT: 2, SIGTERM: 15, EPIPE: 13 }[this.why];
  }
}

/** The Interrupted behind `e`, if any (an AbortError may carry it as its cause). */
export function interruptionOf(e: unknown): Interrupted | undefined {
  if (e instanceof Interrupted) return e;
  const cause = (e as { name?: string; cause?: unknown } | undefined)?.cause;
  return (e as Error)?.name === 'AbortError' && cause instanceof Interrupted ? cause : undefined;
}

/** Set once stdout has failed with EPIPE: nothing more can reach the reader. */
export let stdoutClosed = false;
const stdoutListeners = new Set<() => void>();

/**
 * Keep a closed stdout from crashing the process: EPIPE is remembered (main.ts exits quietly with
 * 141) and running commands are told; any other stdout error is a real failure and is rethrown.
 */
export function watchStdout(): void {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    stdoutClosed = true;
    for (const fn of stdoutListeners) fn();
  });
}

/**
 * Abort `controller` on SIGINT/SIGTERM and when stdout closes, so a command unwinds (temp files,
 * staging folders, leases) instead of dying mid-write. Returns the function that stops listening.
 */
export function abortOnSignals(controller: AbortController): () => void {
  const onInt = () => controller.abort(new Interrupted('SIGINT'));
  const onTerm = () => controller.abort(new Interrupted('SIGTERM'));
  const onPipe = () => controller.abort(new Interrupted('EPIPE'));
  process.once('SIGINT', onInt);
  process.once('SIGTERM', onTerm);
  stdoutListeners.add(onPipe);
  if (stdoutClosed) onPipe();
  return () => {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    stdoutListeners.delete(onPipe);
  };
}

/** One JSON object per line on stdout: the machine-readable output of every command. */
export function emitJson(obj: unknown): void {
  if (stdoutClosed) return;
  process.stdout.write(JSON.stringify(obj) + '\n');
}
