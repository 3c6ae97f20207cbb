import type { Command } from 'commander';
import { UsageError } from '../../core/errors.js';
import { formatRef, formatS3Location, parseRef, parseS3Location, type S3Location } from '../../core/ref.js';
import { parseRate, parseSize } from '../../core/units.js';
import { DEFAULT_PART_SIZE } from '../../s3/limits.js';
import type { PushEvent, PushTarget } from '../../s3/push.js';
import { RateLimiter } from '../../transfer/index.js';
import { abortOnSignals, emitJson, globals, logger } from '../context.js';
import { reporter } from '../progress.js';
import { collect, intOption } from './pull.js';

export function register(program: Command): void {
  program
    .command('push')
    .description('upload a pulled, verified revision to a bucket, with a SHA-256 manifest (again: moves nothing)')
    .argument('<ref>', 'a model in the store: hf://ORG/NAME[@REV], ms://..., s3://...')
    .argument('[dest]', 's3://BUCKET/PREFIX to upload the files under')
    .option('--replica <s3url>', 'upload into a hub replica instead: s3://BUCKET/PREFIX/<hub>/<ORG>/<NAME>/<commit>/ (repeatable)', collect)
    .option('--connections <n>', 'uploads in flight', intOption('--connections', 1, 64))
    .option('--part-size <size>', `multipart part size for large files (default ${DEFAULT_PART_SIZE / 1024 / 1024}MiB, at least 5MiB)`, (v) => parseSize(v, '--part-size'))
    .option('--max-rate <rate>', 'bandwidth limit, e.g. 50MB/s', (v) => parseRate(v, '--max-rate'))
    .action(async (refText: string, destText: string | undefined, o: { replica?: string[]; connections?: number; partSize?: number; maxRate?: number }, cmd: Command) => {
      const g = globals(cmd);
      const ref = parseRef(refText);
      const targets = pushTargets(destText, o.replica ?? [], ref.hub);
      if (o.partSize !== undefined && o.partSize < 5 * 1024 * 1024) throw new UsageError(`invalid --part-size: S3 parts are at least 5MiB`);
      const log = logger(g.logLevel);
      const events = g.json || (!process.stdout.isTTY && !g.quiet);
      const bar = reporter({ json: false, quiet: g.quiet || events });
      const label = formatRef(ref);
      const limiter = new RateLimiter(o.maxRate ?? 0);
      const abort = new AbortController();
      const stopListening = abortOnSignals(abort);
      const onEvent = (e: PushEvent) => {
        if (events) emitJson({ ...e, ref: label, time: new Date().toISOString() });
        // The terminal bar speaks the pull's events: planned = resolved, pushed = published.
        else if (e.type === 'planned') bar.report(label, { type: 'resolved', ref: label, commit: e.commit, files: e.files, bytesTotal: e.bytesToSend });
        else if (e.type === 'progress') bar.report(label, { type: 'progress', bytesDone: e.bytesDone, bytesTotal: e.bytesTotal, source: 'origin' });
        else if (e.type === 'pushed') bar.report(label, { type: 'published', path: e.dest, commit: e.commit });
        else if (e.type === 'waiting' && !g.quiet) process.stderr.write(`${label}: another process (${e.holder}) is pushing to this prefix; waiting for it\n`);
      };
      try {
        for (const target of targets) {
          const { pushModel } = await import('../../s3/push.js');
          const res = await pushModel(ref, target, { store: g.store, limiter, connections: o.connections, partSize: o.partSize, signal: abort.signal, logger: log, onEvent });
          if (events) emitJson({ type: 'done', ref: label, commit: res.commit, dest: res.dest, bytesUploaded: res.bytesUploaded, alreadyComplete: res.alreadyComplete });
          else process.stdout.write(`${res.dest}\n`);
        }
      } finally {
        bar.stop();
        stopListening();
      }
    });
}

/** One destination, or replicas (of a hub ref): exactly one of the two ways. */
export function pushTargets(dest: string | undefined, replicas: readonly string[], hub: string): PushTarget[] {
  if (dest !== undefined && replicas.length > 0) throw new UsageError('push: give either a destination s3://BUCKET/PREFIX or --replica, not both');
  if (dest === undefined && replicas.length === 0) throw new UsageError('push: missing destination: push REF s3://BUCKET/PREFIX, or push REF --replica s3://BUCKET/PREFIX');
  if (dest !== undefined) return [{ to: parseS3Location(dest, 'destination') }];
  if (hub === 's3') throw new UsageError('push --replica: replicas hold copies of hub models (hf://, ms://); push an s3:// model to a plain destination');
  const seen = new Set<string>();
  const out: PushTarget[] = [];
  for (const r of replicas) {
    const loc: S3Location = parseS3Location(r, '--replica');
    if (seen.has(formatS3Location(loc))) continue;
    seen.add(formatS3Location(loc));
    out.push({ replica: loc });
  }
  return out;
}
