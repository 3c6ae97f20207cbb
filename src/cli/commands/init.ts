/**
 * `swift-fetch init`: the init container of an inference pod. Exits 0 only when every model is
 * published and verified in the store the pod mounts, and prints (optionally writes) where.
 *
 * Order of attempts, per model:
 *  1. the store already has the revision (offline lookup through its local refs): done, no network;
 *  2. a node daemon (`--daemon URL` / SWIFT_FETCH_DAEMON) is asked for it and followed over SSE
 *     (polling if SSE is unavailable);
 *  3. no daemon, or it does not answer: pull it ourselves. pullModel's lease protocol makes several
 *     pods on one node (and a daemon) share one download. Not when self-pull is off (--no-self-pull,
 *     or a read-only store, as in the chart's inference pods): then init fails with why, without
 *     ever reaching for a hub.
 */
import { constants as fsc } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { NetworkError, StorageError, TimeoutError, UsageError } from '../../core/errors.js';
import { formatRef, parseRef, repoKey } from '../../core/ref.js';
import { parseDuration } from '../../core/units.js';
import { DaemonClient, DaemonUnreachable } from '../../daemon/client.js';
import { BearerToken } from '../../http/bearer.js';
import { readPem, type ServerTrust } from '../../http/tls.js';
import type { ModelView } from '../../daemon/routes.js';
import { symlinkAtomic, writeFileAtomic } from '../../store/fsutil.js';
import { Store, type PublishRecord } from '../../store/store.js';
import { abortOnSignals, checkStore, emitJson, globals, logger, type GlobalOptions } from '../context.js';
import { viaDaemon } from '../init/follow.js';
import { checkLocked, checkRecord, daemonKey, fromStore, missingSummary, progressLine, pullSelf, type InitContext, type Tracked } from '../init/model.js';
import { pinFor } from '../../lock/index.js';
import { lockOption } from './pull.js';

interface InitFlags {
  daemon?: string;
  daemonTokenFile?: string;
  daemonCaFile?: string;
  daemonServerName?: string;
  /** false with --no-self-pull. */
  selfPull: boolean;
  timeout: string;
  verify?: boolean;
  linkFile?: string;
  link?: string;
  progressInterval: string;
  lock?: string;
  locked?: boolean;
}

async function writeLinks(flags: InitFlags, items: Tracked[]): Promise<void> {
  if (flags.linkFile) {
    await writeFileAtomic(flags.linkFile, items.map((t) => `${t.path}\n`).join(''));
  }
  if (flags.link) {
    try {
      if (items.length === 1) {
        await symlinkAtomic(items[0]!.path!, flags.link);
      } else {
        for (const t of items) await symlinkAtomic(t.path!, join(flags.link, repoKey(t.ref)));
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EISDIR' || code === 'ENOTDIR' || code === 'ENOTEMPTY') {
        throw new UsageError(`--link ${flags.link}: cannot place a link there (${code}); give a path that is free or already a link`);
      }
      throw new StorageError(`--link ${flags.link}: ${(e as Error).message}`, 'ESF_STORAGE', { cause: e });
    }
  }
}

/** A progress line per missing model every `intervalMs`, until stopped. */
function startTicker(g: GlobalOptions, ctx: InitContext, todo: Tracked[], intervalMs: number): NodeJS.Timeout {
  const ticker = setInterval(() => {
    const at = Date.now();
    for (const t of todo) {
      if (t.path !== undefined) continue;
      if (g.json) emitJson({ type: 'progress', ref: t.label, state: t.state, bytesDone: t.bytesDone, bytesTotal: t.bytesTotal, via: t.via, time: new Date(at).toISOString() });
      else ctx.say(progressLine(t, at));
    }
  }, intervalMs);
  ticker.unref();
  return ticker;
}

/** Ask the daemon for every model; an empty map when there is no daemon or it does not answer. */
async function askDaemon(ctx: InitContext, client: DaemonClient | undefined, todo: Tracked[]): Promise<Map<Tracked, ModelView>> {
  const firsts = new Map<Tracked, ModelView>();
  const labels = todo.map((t) => t.label).join(', ');
  if (!client) {
    if (ctx.noSelfPull) throw new UsageError(`${labels} not in the store at ${ctx.storeDir}, no --daemon to ask, and ${ctx.noSelfPull}`);
    return firsts;
  }
  try {
    for (const t of todo) firsts.set(t, await client.pull({ ref: daemonKey(t) }));
    ctx.say(`asked the daemon at ${client.base} for ${labels}`);
  } catch (e) {
    if (!(e instanceof DaemonUnreachable)) throw e;
    firsts.clear();
    if (ctx.noSelfPull) {
      throw new NetworkError(`the daemon at ${client.base} is unreachable (${e.message}) and ${ctx.noSelfPull}: not pulling ${labels} from a hub here`, 'ESF_DAEMON_UNREACHABLE');
    }
    ctx.say(`the daemon at ${client.base} does not answer (${e.message}); pulling ${labels} here instead`);
  }
  return firsts;
}

/** The API token to send, from --daemon-token-file or SWIFT_FETCH_API_TOKEN_FILE (read now: a bad file is exit 2). */
function daemonToken(flags: InitFlags): BearerToken | undefined {
  if (flags.daemonTokenFile) return BearerToken.fromFile(flags.daemonTokenFile, '--daemon-token-file');
  const file = process.env.SWIFT_FETCH_API_TOKEN_FILE;
  return file ? BearerToken.fromFile(file, 'SWIFT_FETCH_API_TOKEN_FILE') : undefined;
}

/** How an https:// daemon's certificate is checked (--daemon-ca-file, --daemon-server-name or their env). */
function daemonTrust(flags: InitFlags): ServerTrust | undefined {
  const caFile = flags.daemonCaFile ?? process.env.SWIFT_FETCH_DAEMON_CA_FILE;
  const serverName = flags.daemonServerName ?? process.env.SWIFT_FETCH_DAEMON_SERVER_NAME;
  if (!caFile && !serverName) return undefined;
  return { ...(caFile ? { ca: readPem(caFile, flags.daemonCaFile ? '--daemon-ca-file' : 'SWIFT_FETCH_DAEMON_CA_FILE') } : {}), ...(serverName ? { serverName } : {}) };
}

/** Why init may not pull from a hub by itself (undefined: it may). */
async function selfPullBlocked(flags: InitFlags, storeDir: string): Promise<string | undefined> {
  if (!flags.selfPull) return 'self-pull is disabled (--no-self-pull)';
  try {
    await access(storeDir, fsc.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // A store that does not exist yet is created by the pull; one we cannot write is no place to pull into.
    if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM') return `the store at ${storeDir} is read-only (${code})`;
  }
  return undefined;
}

function done(ctx: InitContext, t: Tracked, rec: PublishRecord): void {
  t.path = rec.paths.plain;
  t.commit = rec.commit;
  t.state = 'ready';
  const unverified = rec.files.filter((f) => !f.verified).map((f) => f.path);
  if (unverified.length > 0) ctx.say(`${t.label}: the hub gave no hash for ${unverified.length} file(s) (e.g. ${unverified[0]}); they are stored unverified`);
}

export function register(program: Command): void {
  program
    .command('init')
    .description('wait until models are published and verified in the store (init container); print their directories')
    .argument('<ref...>', 'model references')
    .option('--daemon <url>', 'node daemon to ask first, e.g. http://$(HOST_IP):7070 (env SWIFT_FETCH_DAEMON)')
    .option('--daemon-token-file <file>', "file holding the daemon's API token (its api.tokenFile; env SWIFT_FETCH_API_TOKEN_FILE)")
    .option('--daemon-ca-file <file>', 'for an https:// daemon: CA certificates its certificate chains to (env SWIFT_FETCH_DAEMON_CA_FILE)')
    .option('--daemon-server-name <name>', 'for an https:// daemon reached by IP: the name its certificate carries (env SWIFT_FETCH_DAEMON_SERVER_NAME)')
    .option('--no-self-pull', 'never pull from a hub here: only the store and the daemon (also when the store is read-only)')
    .option('--timeout <duration>', 'give up after this long (exit 8); 0 = never', '30m')
    .option('--verify', 're-hash published files instead of trusting the publish record')
    .option('--link-file <file>', 'also write the model directories (one per line) to this file, atomically')
    .option('--link <path>', 'make a stable symlink to the model directory (several refs: a folder of links named HUB--ORG--NAME)')
    .option('--progress-interval <duration>', 'how often to print a progress line', '5s')
    .option('--lock <file>', 'the models must be exactly as this lock file pins them: the locked commit, every file with the locked SHA-256 (exit 5 otherwise)')
    .option('--locked', 'with --lock: refuse (exit 2) refs the lock does not name')
    .action(async (refs: string[], flags: InitFlags, cmd: Command) => {
      const g = globals(cmd);
      const timeoutMs = parseDuration(flags.timeout, '--timeout');
      const intervalMs = Math.max(100, parseDuration(flags.progressInterval, '--progress-interval'));
      const daemonUrl = (flags.daemon ?? process.env.SWIFT_FETCH_DAEMON ?? '').replace(/\/+$/, '');
      if (daemonUrl && !/^https?:\/\/[^/]+/.test(daemonUrl)) throw new UsageError(`--daemon ${JSON.stringify(daemonUrl)}: expected a URL such as http://10.0.0.5:7070`);
      const storeDir = checkStore(g.store);
      const now = Date.now();
      const items: Tracked[] = refs.map((r) => {
        const ref = parseRef(r);
        return { ref, label: formatRef(ref), via: 'store', state: 'pending', bytesDone: 0, bytesTotal: 0, lastBytes: 0, lastAt: now };
      });
      // The lock is read once here (a bad one, or a ref --locked refuses, is exit 2 before anything else).
      const lock = lockOption(flags);
      for (const t of lock ? items : []) {
        const pinned = await pinFor(t.ref, lock!);
        if (pinned) t.pinned = pinned;
      }

      const abort = new AbortController();
      const timedOut = new TimeoutError('init timed out');
      const timer = timeoutMs > 0 ? setTimeout(() => abort.abort(timedOut), timeoutMs) : undefined;
      const timeoutError = () => new TimeoutError(`timed out after ${flags.timeout}; still missing: ${missingSummary(items)}`);
      const stopListening = abortOnSignals(abort);
      const ctx: InitContext = {
        store: new Store(storeDir),
        storeDir,
        stateDir: g.stateDir,
        signal: abort.signal,
        log: logger(g.logLevel),
        verify: Boolean(flags.verify),
        say: (text) => {
          if (g.json) emitJson({ type: 'log', message: text, time: new Date().toISOString() });
          else if (!g.quiet) process.stderr.write(`swift-fetch init: ${text}\n`);
        },
        noSelfPull: await selfPullBlocked(flags, storeDir),
        lock,
      };
      let ticker: NodeJS.Timeout | undefined;
      const client = daemonUrl ? new DaemonClient(daemonUrl, { signal: abort.signal, token: daemonToken(flags), trust: daemonTrust(flags) }) : undefined;
      try {
        // 1. The fast path: the store answers without any network and without re-hashing.
        for (const t of items) {
          const rec = await fromStore(ctx, t);
          if (!rec) continue;
          checkLocked(t, rec);
          await checkRecord(ctx, t, rec);
          done(ctx, t, rec);
        }
        const todo = items.filter((t) => t.path === undefined);
        if (todo.length > 0) {
          ticker = startTicker(g, ctx, todo, intervalMs);
          // 2. The daemon, when there is one and it answers the first request.
          const firsts = await askDaemon(ctx, client, todo);
          // 3. Each model in parallel; the first failure stops the rest (the pod cannot start anyway).
          const run = async (t: Tracked) => {
            const first = firsts.get(t);
            let rec = first && client ? await viaDaemon(ctx, client, t, first) : undefined;
            rec ??= await pullSelf(ctx, t);
            if (!rec.complete && !t.pinned) ctx.say(`${t.label}: published with a narrowed file selection (--include/--exclude); using what is there`);
            checkLocked(t, rec);
            await checkRecord(ctx, t, rec);
            done(ctx, t, rec);
            ctx.say(`${t.label}: ready at ${t.path}`);
          };
          const results = await Promise.allSettled(
            todo.map((t) =>
              run(t).catch((e: unknown) => {
                if (!abort.signal.aborted) abort.abort(e);
                throw e;
              }),
            ),
          );
          if (abort.signal.reason === timedOut) throw timeoutError();
          const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
          if (failed) throw abort.signal.reason ?? failed.reason;
        }
        // A use, for the GC's least-recently-used order (a read-only store mount just skips it).
        for (const t of items) await ctx.store.touch(t.ref, t.commit!).catch(() => undefined);
        await writeLinks(flags, items);
        for (const t of items) {
          if (g.json) emitJson({ type: 'ready', ref: t.label, path: t.path, via: t.via });
          else process.stdout.write(`${t.path}\n`);
        }
      } catch (e) {
        if (abort.signal.reason === timedOut && !(e instanceof TimeoutError && e !== timedOut)) throw timeoutError();
        throw e;
      } finally {
        if (timer) clearTimeout(timer);
        if (ticker) clearInterval(ticker);
        stopListening();
        await client?.close();
      }
    });
}
