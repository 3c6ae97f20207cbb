import type { Command } from 'commander';
import { createBundle, createBundleFile, importBundle, verifyBundle, type CreateSummary } from '../../bundle/index.js';
import { UsageError } from '../../core/errors.js';
import { parseRef } from '../../core/ref.js';
import { formatBytes } from '../../core/units.js';
import { abortOnSignals, checkStore, emitJson, globals, logger } from '../context.js';

async function withSignals<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  const stopListening = abortOnSignals(abort);
  try {
    return await fn(abort.signal);
  } finally {
    stopListening();
  }
}

function summaryLine(s: CreateSummary): string {
  return `${s.manifest.models.length} model(s), ${s.blobs} blob(s), ${formatBytes(s.bytes)}`;
}

export function register(program: Command): void {
  const bundle = program
    .command('bundle')
    .description('offline bundles: carry verified models across an air gap in one tar file')
    .action(() => {
      throw new UsageError('bundle: expected a subcommand: create, import or verify (see swift-fetch bundle --help)');
    });

  bundle
    .command('create')
    .description('write REFs from the store (pulling first what it lacks) into one tar file')
    .argument('<ref...>', 'model references')
    .requiredOption('-o, --output <file>', 'bundle file to write ("-" for stdout)')
    .action(async (refs: string[], o: { output: string }, cmd: Command) => {
      const g = globals(cmd);
      const parsed = refs.map((r) => parseRef(r));
      const log = logger(g.logLevel);
      const toStdout = o.output === '-';
      if (toStdout && process.stdout.isTTY) throw new UsageError('refusing to write a bundle to a terminal: use -o FILE or redirect stdout');
      await withSignals(async (signal) => {
        const opts = { store: checkStore(g.store), stateDir: g.stateDir, logger: log, signal };
        const s = toStdout ? await createBundle(parsed, process.stdout, opts) : await createBundleFile(parsed, o.output, opts);
        const result = {
          type: 'bundle-created',
          file: o.output,
          models: s.manifest.models.map((m) => ({ ref: `${m.hub}://${m.org}/${m.name}@${m.revision}`, commit: m.commit, files: m.files.length })),
          blobs: s.blobs,
          bytes: s.bytes,
          pulled: s.pulled,
        };
        // With the bundle on stdout, everything else goes to stderr.
        if (toStdout) {
          if (!g.quiet) process.stderr.write(g.json ? JSON.stringify(result) + '\n' : `swift-fetch: bundle written: ${summaryLine(s)}\n`);
        } else if (g.json) {
          emitJson(result);
        } else if (!g.quiet) {
          process.stdout.write(`${o.output}: ${summaryLine(s)}\n`);
        }
      });
    });

  bundle
    .command('import')
    .description('verify a bundle completely, then publish its models into the store (no network needed)')
    .argument('<file>', 'bundle file ("-" for stdin)')
    .action(async (file: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const log = logger(g.logLevel);
      await withSignals(async (signal) => {
        const res = await importBundle(file === '-' ? process.stdin : file, { store: checkStore(g.store), logger: log, signal });
        for (const m of res.models) {
          if (g.json) emitJson({ type: 'imported', ref: m.ref, commit: m.commit, revisions: m.revisions, path: m.path, files: m.files, bytes: m.bytes });
          else process.stdout.write(`${m.ref} ${m.path}\n`);
        }
        if (g.json) emitJson({ type: 'done', models: res.models.length, blobsWritten: res.blobsWritten, blobsPresent: res.blobsPresent, bytesRead: res.bytesRead });
      });
    });

  bundle
    .command('verify')
    .description('check a bundle\'s structure and every hash, without a store (exit 0 ok, 2 malformed, 5 corrupt)')
    .argument('<file>', 'bundle file ("-" for stdin)')
    .action(async (file: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      await withSignals(async (signal) => {
        const s = await verifyBundle(file === '-' ? process.stdin : file, { signal });
        if (g.json) {
          emitJson({ type: 'verified', file, ...s });
        } else if (!g.quiet) {
          for (const m of s.models) process.stdout.write(`${m.ref} ${m.commit} ${m.files} file(s) ${formatBytes(m.bytes)}\n`);
          process.stdout.write(`ok: ${s.blobs} blob(s), ${formatBytes(s.bytes)} verified\n`);
        }
      });
    });

  // main.ts only configures the top-level commands; nested ones need the same treatment so that
  // commander reports errors to us instead of exiting by itself.
  for (const c of bundle.commands) c.exitOverride().configureOutput({ writeErr: () => undefined });
}
