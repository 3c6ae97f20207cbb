/**
 * Following a model on the node daemon until it is ready: over its event stream when it has one,
 * by polling when it does not, asking again when it forgot the model (a restart), and handing the
 * model back to the caller (who pulls it by itself) when the daemon stops answering.
 */
import { existsSync } from 'node:fs';
import { NetworkError, StorageError } from '../../core/errors.js';
import { sleep } from '../../core/sleep.js';
import { daemonFailure, DaemonUnreachable, EventsUnavailable, type DaemonClient } from '../../daemon/client.js';
import type { ModelView } from '../../daemon/routes.js';
import type { PublishRecord } from '../../store/store.js';
import { daemonKey, fromStore, type InitContext, type Tracked } from './model.js';

/** Connection failures in a row after which the daemon counts as gone. */
const MAX_FAILURES = 3;

/** The daemon's model, followed until it is ready; undefined means "pull it yourself". */
export async function viaDaemon(ctx: InitContext, client: DaemonClient, t: Tracked, first: ModelView): Promise<PublishRecord | undefined> {
  const key = daemonKey(t);
  t.via = 'daemon';
  // Failures counted before our request are history: the daemon retries on request.
  let baseline = first.attempts ?? 0;
  const settled = (m: ModelView) => m.state === 'ready' || (m.state === 'failed' && (m.attempts ?? baseline + 1) > baseline);
  let status = first;
  const apply = (m: ModelView) => {
    status = m;
    t.state = m.state;
    t.bytesDone = m.bytesDone;
    t.bytesTotal = m.bytesTotal;
    t.waitingFor = m.waitingFor ?? undefined;
  };
  let polling = false;

  /** Follow the event stream until the model settles; else where the model is now (undefined: unknown). */
  const stream = async (): Promise<ModelView | undefined> => {
    try {
      for await (const ev of client.events(key, 'ready')) {
        // `removed`: the daemon stopped tracking it; `shutdown`: the daemon is stopping. Either way
        // the next request says what became of the model.
        if (ev.event === 'removed') break;
        apply(ev.model);
        if (settled(ev.model) || ev.event === 'shutdown') return ev.model;
      }
    } catch (e) {
      if (!(e instanceof EventsUnavailable)) throw e;
      // No stream: either the daemon forgot the model, or it has no events route (an older daemon).
      const known = await client.model(key);
      if (known === undefined) return undefined;
      ctx.log.debug({ reason: e.message }, 'daemon has no event stream; polling');
      polling = true;
      return known;
    }
    return client.model(key);
  };
  const poll = async (): Promise<ModelView | undefined> => {
    await sleep(1_000, ctx.signal);
    return client.model(key);
  };

  apply(first);
  let failures = 0;
  while (!settled(status)) {
    try {
      let next = polling ? await poll() : await stream();
      failures = 0;
      if (!next) {
        // The daemon restarted (or forgot an on-demand pull): ask again.
        next = await client.pull({ ref: key });
        baseline = next.attempts ?? 0;
      }
      apply(next);
      if (!settled(next) && !polling) await sleep(500, ctx.signal);
    } catch (e) {
      if (!(e instanceof DaemonUnreachable)) throw e;
      if (++failures >= MAX_FAILURES) return handBack(ctx, t, `lost the daemon at ${client.base} (${e.message})`);
      await sleep(1_000, ctx.signal);
    }
  }
  if (status.state === 'failed') {
    const err = daemonFailure(status, t.label);
    if (err) throw err;
    return handBack(ctx, t, `the daemon reports a failure (${status.error ?? 'no reason given'}) without an exit code`);
  }
  return readyRecord(ctx, t, status);
}

/** Hand the model back for the caller to pull by itself (undefined), or fail with why when it may not. */
function handBack(ctx: InitContext, t: Tracked, reason: string): undefined {
  if (ctx.noSelfPull) throw new NetworkError(`${t.label}: ${reason}, and ${ctx.noSelfPull}: not pulling it from a hub here`, 'ESF_DAEMON_UNREACHABLE');
  ctx.say(`${t.label}: ${reason}; pulling it here`);
  return undefined;
}

/** Ready on the daemon's side: find it in *our* view of the store (the pod may mount it elsewhere). */
async function readyRecord(ctx: InitContext, t: Tracked, status: ModelView): Promise<PublishRecord> {
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
