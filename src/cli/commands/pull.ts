import type { Command } from 'commander';
import { UsageError } from '../../core/errors.js';
import { formatRef, parseRef, parseS3Location } from '../../core/ref.js';
import { parseRate, parseSize } from '../../core/units.js';
import type { LockOption } from '../../lock/index.js';
import { pullModel } from '../../pull/index.js';
import { formatBytes } from '../../core/units.js';
import { DEFAULT_CHUNK_SIZE, DEFAULT_CONNECTIONS, RateLimiter } from '../../transfer/index.js';
import { abortOnSignals, checkStore, emitJson, globals, logger } from '../context.js';
import { reporter } from '../progress.js';

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function intOption(name: string, min: number, max: number) {
  return (v: string): number => {
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
      throw new UsageError(`invalid ${name} ${JSON.stringify(v)}: expected an integer from ${min} to ${max}`);
    }
    return Number(v);
  };
}

interface PullFlags {
  fsync?: boolean;
  connections?: number;
  chunkSize?: number;
  maxRate?: number;
  include?: string[];
  exclude?: string[];
  replica?: string[];
  lock?: string;
  locked?: boolean;
}

/** `--lock FILE [--locked]` as a pull's lock option (pull and init share it). */
export function lockOption(o: { lock?: string; locked?: boolean }): LockOption | undefined {
  if (o.locked && !o.lock) throw new UsageError('--locked needs --lock FILE (the lock whose refs are allowed)');
  return o.lock ? { file: o.lock, strict: Boolean(o.locked) } : undefined;
}

export function register(program: Command): void {
  program
    .command('pull')
    .description('download, verify and publish models into the store')
    .argument('<ref...>', 'hf://ORG/NAME[@REV], ms://ORG/NAME[@REV], s3://BUCKET/PREFIX or ORG/NAME (ModelScope unless USE_HF=1)')
    .option('--connections <n>', `parallel connections across all files (default: ${DEFAULT_CONNECTIONS})`, intOption('--connections', 1, 256))
    .option('--chunk-size <size>', `range request size, e.g. 16MiB (default: ${formatBytes(DEFAULT_CHUNK_SIZE)} for large files, finer for mid-sized ones so every connection gets work)`, (v) => parseSize(v, '--chunk-size'))
    .option('--max-rate <rate>', 'bandwidth limit over all connections, e.g. 50MB/s, 50MiB/s, 400Mbit/s (default: unlimited)', (v) => parseRate(v, '--max-rate'))
    .option('--fsync', 'make downloaded files durable on disk before publishing (slower where the disk is slower than the network; default: off)')
    .option('--include <glob>', 'only files matching, fnmatch style (repeatable; default: every file)', collect)
    .option('--exclude <glob>', 'skip files matching (repeatable; default: none)', collect)
    .option('--replica <s3url>', 'a bucket with push --replica copies, tried before the hub for hf:// and ms:// (repeatable; default: none)', collect)
    .option('--lock <file>', 'pull the refs this lock file names at their locked commit, every file checked against its SHA-256 (swift-fetch lock)')
    .option('--locked', 'with --lock: refuse (exit 2) refs the lock does not name')
    .action(async (refs: string[], o: PullFlags, cmd: Command) => {
      const g = globals(cmd);
      const parsed = refs.map((r) => parseRef(r));
      const replicas = (o.replica ?? []).map((r) => parseS3Location(r, '--replica'));
      const lock = lockOption(o);
      checkStore(g.store);
      const log = logger(g.logLevel);
      // NDJSON events when asked, or when stdout is a pipe (unless --quiet: then only the path).
      const events = g.json || (!process.stdout.isTTY && !g.quiet);
      const rep = reporter({ json: events, quiet: g.quiet });
      const limiter = new RateLimiter(o.maxRate ?? 0);
      const abort = new AbortController();
      const stopListening = abortOnSignals(abort);
      try {
        for (const ref of parsed) {
          const label = formatRef(ref);
          const res = await pullModel(ref, {
            store: g.store,
            stateDir: g.stateDir,
            include: o.include,
            exclude: o.exclude,
            connections: o.connections,
            chunkSize: o.chunkSize,
            limiter,
            fsync: Boolean(o.fsync),
            replicas,
            ...(lock ? { lock } : {}),
            signal: abort.signal,
            logger: log,
            onEvent: (e) => rep.report(label, e),
            engineHooks: { onEvent: (e) => rep.transfer(e) },
          });
          if (events) {
            emitJson({ type: 'done', ref: label, commit: res.commit, path: res.path, bytesDownloaded: res.bytesDownloaded, alreadyComplete: res.alreadyComplete });
          } else {
            process.stdout.write(`${res.path}\n`);
          }
        }
      } finally {
        rep.stop();
        stopListening();
      }
    });
}
