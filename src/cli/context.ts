import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { createLogger } from '../core/log.js';
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
  return {
    store: resolve(expandHome(o.store ?? defaultStoreDir(env), env)),
    stateDir: resolve(expandHome(o.stateDir ?? env.SWIFT_FETCH_STATE_DIR ?? defaultStateDir(env), env)),
    json: Boolean(o.json),
    quiet: Boolean(o.quiet),
    logLevel: o.logLevel ?? env.SWIFT_FETCH_LOG_LEVEL ?? (o.verbose ? 'info' : 'warn'),
  };
}

let rootLogger: Logger | undefined;
export function logger(level: string): Logger {
  rootLogger ??= createLogger(level);
  return rootLogger;
}

/**
 * Abort `controller` on SIGINT/SIGTERM, so a command unwinds (temp files, staging folders, leases)
 * instead of dying mid-write. Returns the function that stops listening.
 */
export function abortOnSignals(controller: AbortController): () => void {
  const on = () => controller.abort(new Error('interrupted'));
  process.once('SIGINT', on);
  process.once('SIGTERM', on);
  return () => {
    process.off('SIGINT', on);
    process.off('SIGTERM', on);
  };
}

/** One JSON object per line on stdout: the machine-readable output of every command. */
export function emitJson(obj: unknown): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}
