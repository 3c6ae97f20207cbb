/**
 * `swift-fetch init`: the init container of an inference pod. Exits 0 only when every model is
 * published and verified in the store the pod mounts, and prints (optionally writes) where.
 *
 * Order of attempts, per model:
 *  1. the store already has the revision (offline lookup through its local refs): done, no network;
 *  2. a node daemon (`--daemon URL` / SWIFT_FETCH_DAEMON) is asked for it and followed over SSE
 *     (polling if SSE is unavailable);
 *  3. no daemon, or it does not answer: pull it ourselves. pullModel's lease protocol makes several
 *     pods on one node (and a daemon) share one download.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { Agent, request, type Dispatcher } from 'undici';
import {
  ExitCode,
  IntegrityError,
  NotFoundError,
  StorageError,
  SwiftFetchError,
  TimeoutError,
  UsageError,
} from '../../core/errors.js';
import { formatRef, parseRef, repoKey, type ModelRef } from '../../core/ref.js';
import { formatBytes, parseDuration } from '../../core/units.js';
import { pullModel } from '../../pull/index.js';
import { symlinkAtomic, writeFileAtomic } from '../../store/fsutil.js';
import { Store, type PublishRecord } from '../../store/store.js';
import { verifyRecord } from '../../store/verify.js';
import { abortOnSignals, emitJson, globals, logger } from '../context.js';
import { sleep } from '../../core/sleep.js';

interface InitFlags {
  daemon?: string;
  timeout: string;
  verify?: boolean;
  linkFile?: string;
  link?: string;
  progressInterval: string;
}

/** What the daemon's `/v1/models/...` routes return (the fields init relies on). */
interface DaemonStatus {
  ref: string;
  commit: string | null;
  state: 'pending' | 'downloading' | 'verifying' | 'ready' | 'failed';
  bytesDone: number;
  bytesTotal: number;
  path: string | null;
  error: string | null;
  attempts?: number;
  waitingFor?: string | null;
  /** Optional: the failure's exit code / error code, when the daemon reports them. */
  exitCode?: number | null;
  errorCode?: string | null;
}

/** Live state of one model, for the progress lines and the timeout message. */
interface Tracked {
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
}

class DaemonUnreachable extends Error {}

type Say = (text: string) => void;

// ---------------------------------------------------------------------------------------------
// The daemon client: plain HTTP to the node daemon, never through a proxy (it is on the node).

const EXIT_CLASSES: Record<number, string> = {
  [ExitCode.usage]: 'ESF_USAGE',
  [ExitCode.notFound]: 'ESF_NOT_FOUND',
  [ExitCode.auth]: 'ESF_AUTH',
  [ExitCode.integrity]: 'ESF_INTEGRITY',
  [ExitCode.storage]: 'ESF_STORAGE',
  [ExitCode.network]: 'ESF_NETWORK',
  [ExitCode.timeout]: 'ESF_TIMEOUT',
};

/** Exit code of a daemon-reported failure, when the daemon says which kind it was. */
function daemonExitCode(s: DaemonStatus): number | undefined {
  if (typeof s.exitCode === 'number' && Number.isInteger(s.exitCode) && s.exitCode > 0) return s.exitCode;
  const code = s.errorCode ?? '';
  if (!code) return undefined;
  const byPrefix: Array<[RegExp, number]> = [
    [/^ESF_(USAGE|BAD_|UNSAFE)/, ExitCode.usage],
    [/^ESF_(NOT_FOUND|NO_)/, ExitCode.notFound],
    [/^ESF_(AUTH|GATED)/, ExitCode.auth],
    [/^ESF_INTEGRITY/, ExitCode.integrity],
    [/^ESF_(STORAGE|E[A-Z]+$)/, ExitCode.storage],
    [/^ESF_(NETWORK|BAD_RESPONSE)/, ExitCode.network],
    [/^ESF_TIMEOUT/, ExitCode.timeout],
  ];
  return byPrefix.find(([re]) => re.test(code))?.[1];
}

class DaemonClient {
  private readonly dispatcher: Dispatcher;
  constructor(readonly base: string, private readonly signal: AbortSignal) {
    // Short connect timeout: a daemon that is not there must not eat the init's time budget.
    this.dispatcher = new Agent({ connect: { timeout: 5_000 }, headersTimeout: 10_000, bodyTimeout: 60_000 });
  }

  close(): Promise<void> {
    return this.dispatcher.close().catch(() => undefined);
  }

  private async call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    let res;
    try {
      res = await request(`${this.base}${path}`, {
        method,
        dispatcher: this.dispatcher,
        signal: this.signal,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (e) {
      if (this.signal.aborted) throw this.signal.reason;
      throw new DaemonUnreachable(describeNetError(e));
    }
    const text = await res.body.text().catch(() => '');
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.statusCode, json };
  }

  async pull(key: string): Promise<DaemonStatus> {
    const r = await this.call('POST', '/v1/pulls', { ref: key });
    if (r.status === 202 || r.status === 200) return r.json as DaemonStatus;
    const msg = (r.json as { error?: string } | undefined)?.error ?? `HTTP ${r.status}`;
    if (r.status === 400) throw new UsageError(`the daemon refused ${key}: ${msg}`);
    // 404/405 (not a swift-fetch daemon), 5xx (shutting down, broken): treat as not there.
    throw new DaemonUnreachable(`POST /v1/pulls answered ${r.status}: ${msg}`);
  }

  /** undefined when the daemon does not know the model (restarted, or forgot an on-demand pull). */
  async get(key: string): Promise<DaemonStatus | undefined> {
    const r = await this.call('GET', `/v1/models/${encodeURIComponent(key)}`);
    if (r.status === 200) return r.json as DaemonStatus;
    if (r.status === 404) return undefined;
    throw new DaemonUnreachable(`GET /v1/models answered ${r.status}`);
  }

  /**
   * Server-sent events for one model (`until=ready`: failures arrive as progress with `error`
   * set while the daemon retries). Yields each status; returns when the stream ends. Throws
   * `SseUnsupported` when the route does not stream, DaemonUnreachable when the connection fails.
   */
  async *events(key: string): AsyncGenerator<{ event: string; status: DaemonStatus }> {
    let res;
    try {
      res = await request(`${this.base}/v1/models/${encodeURIComponent(key)}/events?until=ready`, {
        method: 'GET',
        dispatcher: this.dispatcher,
        signal: this.signal,
        headers: { accept: 'text/event-stream' },
      });
    } catch (e) {
      if (this.signal.aborted) throw this.signal.reason;
      throw new DaemonUnreachable(describeNetError(e));
    }
    const type = String(res.headers['content-type'] ?? '');
    if (res.statusCode === 404) {
      await res.body.dump().catch(() => undefined);
      return;
    }
    if (res.statusCode !== 200 || !type.startsWith('text/event-stream')) {
      await res.body.dump().catch(() => undefined);
      throw new SseUnsupported(`events route answered ${res.statusCode} ${type}`);
    }
    let buf = '';
    try {
      for await (const chunk of res.body) {
        buf += (chunk as Buffer).toString('utf8');
        for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let event = 'message';
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (data.length === 0) continue; // comments (keep-alives) and `retry:`
          let status: DaemonStatus;
          try {
            status = JSON.parse(data.join('\n')) as DaemonStatus;
          } catch {
            continue;
          }
          yield { event, status };
        }
      }
    } catch (e) {
      if (this.signal.aborted) throw this.signal.reason;
      throw new DaemonUnreachable(describeNetError(e));
    }
  }
}

class SseUnsupported extends Error {}

function describeNetError(e: unknown): string {
  const err = e as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  return err?.cause?.code ?? err?.code ?? err?.cause?.message ?? err?.message ?? String(e);
}


// ---------------------------------------------------------------------------------------------

interface Context {
  store: Store;
  storeDir: string;
  stateDir: string;
  signal: AbortSignal;
  say: Say;
  log: ReturnType<typeof logger>;
  verify: boolean;
}

/** The store's own answer, without any network: the record of a complete revision, or undefined. */
async function fromStore(ctx: Context, t: Tracked): Promise<PublishRecord | undefined> {
  let rec: PublishRecord;
  try {
    rec = await ctx.store.findRecord(t.ref, t.ref.revision);
  } catch (e) {
    if (e instanceof NotFoundError) return undefined;
    throw e;
  }
  return rec.complete ? rec : undefined;
}

/** --verify: re-hash what the record promises. A mismatch is an integrity failure (exit 5). */
async function checkRecord(ctx: Context, t: Tracked, rec: PublishRecord): Promise<void> {
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

async function pullSelf(ctx: Context, t: Tracked): Promise<PublishRecord> {
  t.via = 'self';
  t.state = 'resolving';
  const res = await pullModel(t.ref, {
    store: ctx.storeDir,
    stateDir: ctx.stateDir,
    signal: ctx.signal,
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

/** The daemon's model, followed until it is ready; undefined means "pull it yourself". */
async function viaDaemon(ctx: Context, client: DaemonClient, t: Tracked, first: DaemonStatus): Promise<PublishRecord | undefined> {
  const key = formatRef(t.ref);
  t.via = 'daemon';
  let status = first;
  // Failures counted before our request are history: the daemon retries on request.
  let baseline = first.attempts ?? 0;
  let failures = 0;
  let polling = false;
  const apply = (s: DaemonStatus) => {
    status = s;
    t.state = s.state;
    t.bytesDone = s.bytesDone;
    t.bytesTotal = s.bytesTotal;
    t.waitingFor = s.waitingFor ?? undefined;
  };
  apply(first);
  for (;;) {
    if (status.state === 'ready') break;
    if (status.state === 'failed' && (status.attempts ?? baseline + 1) > baseline) {
      const code = daemonExitCode(status);
      if (code !== undefined) {
        throw new SwiftFetchError(status.errorCode ?? EXIT_CLASSES[code] ?? 'ESF_DAEMON', code, `${t.label}: the daemon failed to pull it: ${status.error ?? 'unknown error'}`);
      }
      ctx.say(`${t.label}: the daemon reports a failure (${status.error ?? 'no reason given'}) without an error code; pulling it here to find out`);
      return undefined;
    }
    try {
      let next: DaemonStatus | undefined;
      const settled = (s: DaemonStatus) => s.state === 'ready' || (s.state === 'failed' && (s.attempts ?? baseline + 1) > baseline);
      if (!polling) {
        try {
          for await (const ev of client.events(key)) {
            failures = 0;
            // `removed`: the daemon stopped tracking it; its data is not a status.
            if (ev.event === 'removed') break;
            apply(ev.status);
            if (settled(ev.status)) {
              next = ev.status;
              break;
            }
          }
          // The stream ended without an answer: where is the model now? (undefined: unknown.)
          next ??= await client.get(key);
        } catch (e) {
          if (!(e instanceof SseUnsupported)) throw e;
          ctx.log.debug({ err: e.message }, 'daemon has no event stream; polling');
          polling = true;
        }
      }
      if (polling) {
        await sleep(1_000, ctx.signal);
        next = await client.get(key);
      }
      failures = 0;
      if (!next) {
        // The daemon restarted (or forgot an on-demand pull): ask again.
        next = await client.pull(key);
        baseline = next.attempts ?? 0;
      }
      apply(next);
      if (!settled(next) && !polling) await sleep(500, ctx.signal);
    } catch (e) {
      if (!(e instanceof DaemonUnreachable)) throw e;
      failures++;
      if (failures >= 3) {
        ctx.say(`${t.label}: lost the daemon at ${client.base} (${e.message}); pulling it here`);
        return undefined;
      }
      await sleep(1_000, ctx.signal);
    }
  }
  // Ready on the daemon's side: find it in *our* view of the store (the pod may mount it elsewhere).
  if (status.commit) {
    const rec = await ctx.store.readRecord(t.ref, status.commit);
    if (rec) return rec;
  }
  const rec = await fromStore(ctx, t).catch(() => undefined);
  if (rec && (!status.commit || rec.commit === status.commit)) return rec;
  if (status.path && existsSync(status.path)) {
    ctx.say(`${t.label}: ready at the daemon's path ${status.path}, but the store ${ctx.storeDir} has no record of it; is --store the daemon's store?`);
  }
  throw new StorageError(
    `${t.label}: the daemon says it is ready (commit ${status.commit ?? '?'}), but the store at ${ctx.storeDir} does not have it: mount the daemon's store and pass it as --store`,
    'ESF_STORE_MISMATCH',
  );
}

function progressLine(t: Tracked, now: number): string {
  const pct = t.bytesTotal > 0 ? `${((100 * t.bytesDone) / t.bytesTotal).toFixed(1)}%` : '0.0%';
  const secs = Math.max(0.001, (now - t.lastAt) / 1000);
  const rate = Math.max(0, t.bytesDone - t.lastBytes) / secs;
  t.lastBytes = t.bytesDone;
  t.lastAt = now;
  const wait = t.state === 'waiting' && t.waitingFor ? ` (another process is downloading it: ${t.waitingFor})` : '';
  return `${t.label}: ${t.state} ${pct} (${formatBytes(t.bytesDone)} of ${formatBytes(t.bytesTotal)}) at ${formatBytes(rate)}/s via ${t.via}${wait}`;
}

function missingSummary(items: Tracked[]): string {
  return items
    .filter((t) => t.path === undefined)
    .map((t) => `${t.label} (${t.state}, ${formatBytes(t.bytesDone)} of ${formatBytes(t.bytesTotal)})`)
    .join(', ');
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

export function register(program: Command): void {
  program
    .command('init')
    .description('wait until models are published and verified in the store (init container); print their directories')
    .argument('<ref...>', 'model references')
    .option('--daemon <url>', 'node daemon to ask first, e.g. http://$(HOST_IP):7070 (env SWIFT_FETCH_DAEMON)')
    .option('--timeout <duration>', 'give up after this long (exit 8); 0 = never', '30m')
    .option('--verify', 're-hash published files instead of trusting the publish record')
    .option('--link-file <file>', 'also write the model directories (one per line) to this file, atomically')
    .option('--link <path>', 'make a stable symlink to the model directory (several refs: a folder of links named HUB--ORG--NAME)')
    .option('--progress-interval <duration>', 'how often to print a progress line', '5s')
    .action(async (refs: string[], flags: InitFlags, cmd: Command) => {
      const g = globals(cmd);
      const timeoutMs = parseDuration(flags.timeout, '--timeout');
      const intervalMs = Math.max(100, parseDuration(flags.progressInterval, '--progress-interval'));
      const daemonUrl = (flags.daemon ?? process.env.SWIFT_FETCH_DAEMON ?? '').replace(/\/+$/, '');
      if (daemonUrl && !/^https?:\/\/[^/]+/.test(daemonUrl)) throw new UsageError(`--daemon ${JSON.stringify(daemonUrl)}: expected a URL such as http://10.0.0.5:7070`);
      const now = Date.now();
      const items: Tracked[] = refs.map((r) => {
        const ref = parseRef(r);
        return { ref, label: formatRef(ref), via: 'store', state: 'pending', bytesDone: 0, bytesTotal: 0, lastBytes: 0, lastAt: now };
      });
      const say: Say = (text) => {
        if (g.json) emitJson({ type: 'log', message: text, time: new Date().toISOString() });
        else if (!g.quiet) process.stderr.write(`swift-fetch init: ${text}\n`);
      };

      const abort = new AbortController();
      const timedOut = new TimeoutError('init timed out');
      const timer = timeoutMs > 0 ? setTimeout(() => abort.abort(timedOut), timeoutMs) : undefined;
      const stopListening = abortOnSignals(abort);
      const ctx: Context = {
        store: new Store(g.store), storeDir: g.store, stateDir: g.stateDir, signal: abort.signal, say, log: logger(g.logLevel), verify: Boolean(flags.verify),
      };
      let ticker: NodeJS.Timeout | undefined;
      let client: DaemonClient | undefined;
      try {
        const done = (t: Tracked, rec: PublishRecord) => {
          t.path = rec.paths.plain;
          t.commit = rec.commit;
          t.state = 'ready';
          const unverified = rec.files.filter((f) => !f.verified).map((f) => f.path);
          if (unverified.length > 0) say(`${t.label}: the hub gave no hash for ${unverified.length} file(s) (e.g. ${unverified[0]}); they are stored unverified`);
        };
        // 1. The fast path: the store answers without any network and without re-hashing.
        for (const t of items) {
          const rec = await fromStore(ctx, t);
          if (!rec) continue;
          await checkRecord(ctx, t, rec);
          done(t, rec);
        }
        const todo = items.filter((t) => t.path === undefined);
        if (todo.length > 0) {
          ticker = setInterval(() => {
            const at = Date.now();
            for (const t of todo) {
              if (t.path !== undefined) continue;
              if (g.json) emitJson({ type: 'progress', ref: t.label, state: t.state, bytesDone: t.bytesDone, bytesTotal: t.bytesTotal, via: t.via, time: new Date(at).toISOString() });
              else say(progressLine(t, at));
            }
          }, intervalMs);
          ticker.unref();

          // 2. The daemon, when there is one and it answers the first request.
          const firsts = new Map<Tracked, DaemonStatus>();
          if (daemonUrl) {
            client = new DaemonClient(daemonUrl, abort.signal);
            try {
              for (const t of todo) firsts.set(t, await client.pull(t.label));
              say(`asked the daemon at ${daemonUrl} for ${todo.map((t) => t.label).join(', ')}`);
            } catch (e) {
              if (!(e instanceof DaemonUnreachable)) throw e;
              firsts.clear();
              say(`the daemon at ${daemonUrl} does not answer (${e.message}); pulling ${todo.map((t) => t.label).join(', ')} here instead`);
            }
          }
          // 3. Each model in parallel; the first failure stops the rest (the pod cannot start anyway).
          const run = async (t: Tracked) => {
            const first = firsts.get(t);
            let rec = first && client ? await viaDaemon(ctx, client, t, first) : undefined;
            rec ??= await pullSelf(ctx, t);
            if (!rec.complete) {
              say(`${t.label}: published with a narrowed file selection (--include/--exclude); using what is there`);
            }
            await checkRecord(ctx, t, rec);
            done(t, rec);
            say(`${t.label}: ready at ${t.path}`);
          };
          const results = await Promise.allSettled(
            todo.map((t) =>
              run(t).catch((e: unknown) => {
                if (!abort.signal.aborted) abort.abort(e);
                throw e;
              }),
            ),
          );
          if (abort.signal.reason === timedOut) {
            throw new TimeoutError(`timed out after ${flags.timeout}; still missing: ${missingSummary(items)}`);
          }
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
        if (abort.signal.reason === timedOut && !(e instanceof TimeoutError && e !== timedOut)) {
          throw new TimeoutError(`timed out after ${flags.timeout}; still missing: ${missingSummary(items)}`);
        }
        throw e;
      } finally {
        if (timer) clearTimeout(timer);
        if (ticker) clearInterval(ticker);
        stopListening();
        await client?.close();
      }
    });
}
