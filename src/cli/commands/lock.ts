/**
 * `swift-fetch lock`: write, update and check lock files. Three modes:
 *   lock REF... [-o FILE]       resolve the REFs now and write FILE with exactly them
 *   lock --update [REF...]      re-resolve every ref in FILE (or only the REFs, adding new ones)
 *   lock --check [REF...]       exit 5 when the hub has moved; writes nothing, downloads nothing
 */
import type { Command } from 'commander';
import { IntegrityError, UsageError } from '../../core/errors.js';
import { formatRef, parseRef, type ModelRef } from '../../core/ref.js';
import { formatBytes } from '../../core/units.js';
import {
  checkModel,
  DEFAULT_LOCK_FILE,
  describeDifference,
  findPin,
  lockModel,
  LOCK_VERSION,
  pinnedRef,
  readLockFile,
  writeLockFile,
  type CheckResult,
  type LockedModel,
  type ResolveOptions,
} from '../../lock/index.js';
import { abortOnSignals, emitJson, globals, logger, type GlobalOptions } from '../context.js';
import { collect } from './pull.js';

interface LockFlags {
  output: string;
  update?: boolean;
  check?: boolean;
  include?: string[];
  exclude?: string[];
}

const short = (commit: string) => commit.slice(0, 12);

function say(g: GlobalOptions, json: Record<string, unknown>, text: string): void {
  if (g.json) emitJson(json);
  else if (!g.quiet) process.stdout.write(`${text}\n`);
}

function summary(m: LockedModel): string {
  return `${m.files.length} file(s), ${formatBytes(m.files.reduce((n, f) => n + f.size, 0))}`;
}

/** Refs as given, each once (the same ref written twice, or in two spellings, locks once). */
function uniqueRefs(refs: string[]): ModelRef[] {
  const seen = new Map<string, ModelRef>();
  for (const r of refs) {
    const ref = parseRef(r);
    seen.set(formatRef(ref), ref);
  }
  return [...seen.values()];
}

async function writeNew(g: GlobalOptions, refs: ModelRef[], flags: LockFlags, opts: ResolveOptions): Promise<void> {
  const models: LockedModel[] = [];
  for (const ref of refs) {
    const m = await lockModel(ref, { include: flags.include, exclude: flags.exclude }, opts);
    models.push(m);
    say(g, { type: 'locked', ref: m.ref, commit: m.commit, files: m.files.length }, `locked    ${m.ref}  ${short(m.commit)}  ${summary(m)}`);
  }
  await writeLockFile(flags.output, { lockfileVersion: LOCK_VERSION, models });
  say(g, { type: 'written', file: flags.output, models: models.length }, `wrote ${flags.output} (${models.length} model(s))`);
}

async function update(g: GlobalOptions, refs: ModelRef[], flags: LockFlags, opts: ResolveOptions): Promise<void> {
  const { lock } = await readLockFile(flags.output);
  const byRef = new Map(lock.models.map((m) => [m.ref, m]));
  const targets = refs.length > 0 ? refs : lock.models.map(pinnedRef);
  const narrowed = Boolean(flags.include?.length || flags.exclude?.length);
  for (const ref of targets) {
    const key = formatRef(ref);
    const before = byRef.get(key);
    // A ref keeps the selection it was locked with unless new patterns are given.
    const select = narrowed || !before ? { include: flags.include, exclude: flags.exclude } : { include: before.include, exclude: before.exclude };
    const m = await lockModel(ref, select, opts);
    byRef.set(key, m);
    const state = !before ? 'added' : before.commit === m.commit ? 'unchanged' : 'updated';
    const how = state === 'updated' ? `${short(before!.commit)} -> ${short(m.commit)}` : short(m.commit);
    say(g, { type: state, ref: m.ref, commit: m.commit, ...(before && state === 'updated' ? { previous: before.commit } : {}) }, `${state.padEnd(9)} ${m.ref}  ${how}`);
  }
  await writeLockFile(flags.output, { lockfileVersion: LOCK_VERSION, models: [...byRef.values()] });
  say(g, { type: 'written', file: flags.output, models: byRef.size }, `wrote ${flags.output} (${byRef.size} model(s))`);
}

function checkLine(pin: LockedModel, r: CheckResult): string {
  if (r.state === 'ok') return `ok        ${pin.ref}  ${short(pin.commit)}`;
  if (r.state === 'moved') return `MOVED     ${pin.ref}  locked ${short(pin.commit)}, the hub has ${short(r.commit)} now`;
  return r.differences.map((d) => `CHANGED   ${pin.ref}  ${short(pin.commit)}  ${describeDifference(d, 'at the hub')}`).join('\n');
}

async function check(g: GlobalOptions, refs: ModelRef[], flags: LockFlags, opts: ResolveOptions): Promise<void> {
  const { lock } = await readLockFile(flags.output);
  const pins = refs.length === 0 ? lock.models : refs.map((ref) => {
    const pin = findPin(lock, ref);
    if (!pin) throw new UsageError(`${formatRef(ref)} is not in the lock ${flags.output}`, 'ESF_NOT_LOCKED');
    return pin;
  });
  let stale = 0;
  for (const pin of pins) {
    const r = await checkModel(pin, pinnedRef(pin), opts);
    if (r.state !== 'ok') stale++;
    say(g, { type: 'checked', ref: pin.ref, state: r.state, locked: pin.commit, commit: r.commit, ...(r.state === 'changed' ? { differences: r.differences } : {}) }, checkLine(pin, r));
  }
  if (stale > 0) {
    throw new IntegrityError(`${stale} of ${pins.length} locked model(s) no longer match the hub; re-pin with: swift-fetch lock --update -o ${flags.output}`, {
      expected: `${pins.length} model(s) as locked`, found: `${stale} moved or changed`,
    });
  }
}

export function register(program: Command): void {
  program
    .command('lock')
    .description('pin model refs to their commit and every file\'s SHA-256 in a lock file, for reproducible pulls (--lock)')
    .argument('[ref...]', 'model references (with --update or --check: only these; default: every ref in the lock)')
    .option('-o, --output <file>', 'the lock file to write, or with --update / --check to read', DEFAULT_LOCK_FILE)
    .option('--update', 're-resolve the refs in the lock file (all, or the REFs given: a REF not in it is added; the others stay pinned)')
    .option('--check', 'resolve the locked refs again and exit 5 when the hub has moved or lists other files; writes and downloads nothing')
    .option('--include <glob>', 'only files matching, fnmatch style (repeatable; recorded in the lock; default: every file)', collect)
    .option('--exclude <glob>', 'skip files matching (repeatable; recorded in the lock; default: none)', collect)
    .action(async (refTexts: string[], flags: LockFlags, cmd: Command) => {
      const g = globals(cmd);
      if (flags.update && flags.check) throw new UsageError('lock: --update and --check exclude each other');
      if (flags.check && (flags.include || flags.exclude)) throw new UsageError('lock --check: --include/--exclude apply when locking; a check uses the selection in the lock');
      if (!flags.update && !flags.check && refTexts.length === 0) throw new UsageError('lock: give the REFs to lock, or --update / --check for an existing lock file');
      const refs = uniqueRefs(refTexts);
      const abort = new AbortController();
      const stopListening = abortOnSignals(abort);
      const opts: ResolveOptions = { store: g.store, signal: abort.signal, logger: logger(g.logLevel) };
      try {
        if (flags.check) await check(g, refs, flags, opts);
        else if (flags.update) await update(g, refs, flags, opts);
        else await writeNew(g, refs, flags, opts);
      } finally {
        stopListening();
      }
    });
}
