/**
 * Defaults shared by the daemon and the CLI, so that `swift-fetch pull` on a laptop and a daemon
 * started without a config agree on where the store and the node-local state live.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

export const DEFAULT_LISTEN = { host: '127.0.0.1', port: 7070 } as const;
export const DEFAULT_PEER_PORT = 7070;
export const DEFAULT_MAX_CONCURRENT_PULLS = 2;
export const DEFAULT_GC_INTERVAL_MS = 10 * 60_000;
export const DEFAULT_LOG_LEVEL = 'info';
/** On-demand models tracked at once: room for every pod of a busy node asking for its own. */
export const DEFAULT_MAX_REQUESTED = 64;
export const DEFAULT_FORGET_FAILED_MS = 15 * 60_000;
/** An init asks once per model (and again after a daemon restart): a minute's worth is plenty. */
export const DEFAULT_REQUESTS_PER_MINUTE = 60;

function home(env: NodeJS.ProcessEnv): string {
  return env.HOME && env.HOME !== '' ? env.HOME : homedir();
}

/** `$SWIFT_FETCH_STORE`, else `$XDG_CACHE_HOME/swift-fetch/store`, else `~/.cache/swift-fetch/store`. */
export function defaultStoreDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SWIFT_FETCH_STORE) return env.SWIFT_FETCH_STORE;
  const cache = env.XDG_CACHE_HOME || join(home(env), '.cache');
  return join(cache, 'swift-fetch', 'store');
}

/**
 * Node-local state (resume database): `$SWIFT_FETCH_STATE_DIR`, else `$XDG_STATE_HOME/swift-fetch`,
 * else `~/.local/state/swift-fetch`.
 */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SWIFT_FETCH_STATE_DIR) return env.SWIFT_FETCH_STATE_DIR;
  const state = env.XDG_STATE_HOME || join(home(env), '.local', 'state');
  return join(state, 'swift-fetch');
}

/** Expand a leading `~` the way a shell would, so configs can say `~/models`. */
export function expandHome(p: string, env: NodeJS.ProcessEnv = process.env): string {
  if (p === '~') return home(env);
  if (p.startsWith('~/')) return join(home(env), p.slice(2));
  return p;
}
