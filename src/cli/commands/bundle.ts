import type { Command } from 'commander';
import { createBundle, createBundleFile, importBundle, loadSigningKey, loadTrustedKey, shortKeyId, verifyBundle, type CreateSummary, type Signer } from '../../bundle/index.js';
import { UsageError } from '../../core/errors.js';
import { parseRef } from '../../core/ref.js';
import { formatBytes } from '../../core/units.js';
import { abortOnSignals, checkStore, emitJson, globals, logger } from '../context.js';
import { collect } from './pull.js';

async function withSignals<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  const stopListening = abortOnSignals(abort);
  try {
    return await fn(abort.signal);
  } finally {
    stopListening();
  }
}

function summaryLine(s: CreateSummary, signedBy?: string): string {
  return `${s.manifest.models.length} model(s), ${s.blobs} blob(s), ${formatBytes(s.bytes)}${signedBy ? `, signed by ${shortKeyId(signedBy)}` : ''}`;
}

/** How a read bundle's signature is described to people. */
function signerLine(signer: Signer | undefined): string {
  if (!signer) return 'not signed';
  return `signed by ${shortKeyId(signer.keyId)}${signer.trusted ? ' (trusted)' : ' (valid; no --trust given, so the signer was not checked)'}`;
}

const TRUST_HELP = 'accept only bundles signed by this Ed25519 public key, PEM (repeatable; exit 5 for unsigned or foreign-signed bundles)';

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
    .option('--sign <key>', 'sign the manifest with this Ed25519 private key, PEM (openssl genpkey -algorithm ed25519)')
    .action(async (refs: string[], o: { output: string; sign?: string }, cmd: Command) => {
      const g = globals(cmd);
      const parsed = refs.map((r) => parseRef(r));
      // Read before anything is pulled or written: a bad key is bad input (exit 2).
      const sign = o.sign ? loadSigningKey(o.sign) : undefined;
      const log = logger(g.logLevel);
      const toStdout = o.output === '-';
      if (toStdout && process.stdout.isTTY) throw new UsageError('refusing to write a bundle to a terminal: use -o FILE or redirect stdout');
      await withSignals(async (signal) => {
        const opts = { store: checkStore(g.store), stateDir: g.stateDir, logger: log, signal, ...(sign ? { sign } : {}) };
        const s = toStdout ? await createBundle(parsed, process.stdout, opts) : await createBundleFile(parsed, o.output, opts);
        const result = {
          type: 'bundle-created',
          file: o.output,
          models: s.manifest.models.map((m) => ({ ref: `${m.hub}://${m.org}/${m.name}@${m.revision}`, commit: m.commit, files: m.files.length })),
          blobs: s.blobs,
          bytes: s.bytes,
          pulled: s.pulled,
          ...(sign ? { signedBy: sign.keyId } : {}),
        };
        // With the bundle on stdout, everything else goes to stderr.
        if (toStdout) {
          if (!g.quiet) process.stderr.write(g.json ? JSON.stringify(result) + '\n' : `swift-fetch: bundle written: ${summaryLine(s, sign?.keyId)}\n`);
        } else if (g.json) {
          emitJson(result);
        } else if (!g.quiet) {
          process.stdout.write(`${o.output}: ${summaryLine(s, sign?.keyId)}\n`);
        }
      });
    });

  bundle
    .command('import')
    .description('verify a bundle completely, then publish its models into the store (no network needed)')
    .argument('<file>', 'bundle file ("-" for stdin)')
    .option('--trust <pub>', TRUST_HELP, collect)
    .action(async (file: string, o: { trust?: string[] }, cmd: Command) => {
      const g = globals(cmd);
      const log = logger(g.logLevel);
      const trust = (o.trust ?? []).map((f) => loadTrustedKey(f));
      await withSignals(async (signal) => {
        const res = await importBundle(file === '-' ? process.stdin : file, { store: checkStore(g.store), logger: log, signal, trust });
        for (const m of res.models) {
          if (g.json) emitJson({ type: 'imported', ref: m.ref, commit: m.commit, revisions: m.revisions, path: m.path, files: m.files, bytes: m.bytes });
          else process.stdout.write(`${m.ref} ${m.path}\n`);
        }
        if (g.json) emitJson({ type: 'done', models: res.models.length, blobsWritten: res.blobsWritten, blobsPresent: res.blobsPresent, bytesRead: res.bytesRead, signer: res.signer ?? null });
        else if (!g.quiet && res.signer) process.stderr.write(`swift-fetch: bundle ${signerLine(res.signer)}\n`);
      });
    });

  bundle
    .command('verify')
    .description('check a bundle\'s structure and every hash, without a store (exit 0 ok, 2 malformed, 5 corrupt)')
    .argument('<file>', 'bundle file ("-" for stdin)')
    .option('--trust <pub>', TRUST_HELP, collect)
    .action(async (file: string, o: { trust?: string[] }, cmd: Command) => {
      const g = globals(cmd);
      const trust = (o.trust ?? []).map((f) => loadTrustedKey(f));
      await withSignals(async (signal) => {
        const s = await verifyBundle(file === '-' ? process.stdin : file, { signal, trust });
        if (g.json) {
          emitJson({ type: 'verified', file, ...s, signer: s.signer ?? null });
        } else if (!g.quiet) {
          for (const m of s.models) process.stdout.write(`${m.ref} ${m.commit} ${m.files} file(s) ${formatBytes(m.bytes)}\n`);
          process.stdout.write(`ok: ${s.blobs} blob(s), ${formatBytes(s.bytes)} verified, ${signerLine(s.signer)}\n`);
        }
      });
    });

  // main.ts only configures the top-level commands; nested ones need the same treatment so that
  // commander reports errors to us instead of exiting by itself.
  for (const c of bundle.commands) c.exitOverride().configureOutput({ writeErr: () => undefined });
}
