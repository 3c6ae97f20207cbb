import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { ExitCode, exitCodeOf, isSwiftFetchError } from '../core/errors.js';
import { LOG_LEVELS } from '../core/log.js';
import { interruptionOf, stdoutClosed, watchStdout } from './context.js';
import * as bundle from './commands/bundle.js';
import * as daemon from './commands/daemon.js';
import * as gc from './commands/gc.js';
import * as init from './commands/init.js';
import * as inspect from './commands/inspect.js';
import * as lock from './commands/lock.js';
import * as ls from './commands/ls.js';
import * as path from './commands/path.js';
import * as pull from './commands/pull.js';
import * as push from './commands/push.js';
import * as rm from './commands/rm.js';
import * as sha256sums from './commands/sha256sums.js';
import * as verify from './commands/verify.js';

const COMMANDS: Array<{ register(program: Command): void }> = [pull, push, path, verify, ls, rm, gc, daemon, init, bundle, lock, sha256sums, inspect];

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

export function buildProgram(): Command {
  const program = new Command('swift-fetch')
    .description('resumable, verified model distribution for Hugging Face and ModelScope')
    .version(version())
    .option('--store <dir>', 'store directory (env SWIFT_FETCH_STORE; default: ~/.cache/swift-fetch/store)')
    .option('--state-dir <dir>', 'node-local resume state (env SWIFT_FETCH_STATE_DIR; default: ~/.local/state/swift-fetch)')
    .option('--json', 'machine-readable NDJSON on stdout (pull: also whenever stdout is not a terminal)')
    .option('-q, --quiet', 'no progress output; print only the result')
    .option('-v, --verbose', 'info-level logs on stderr')
    .addOption(new Option('--log-level <level>', 'log level (env SWIFT_FETCH_LOG_LEVEL; default warn, info with -v)').choices(LOG_LEVELS))
    // Each command's --help also lists these, since they apply to it (--store above all).
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ writeErr: () => undefined });
  for (const c of COMMANDS) c.register(program);
  for (const c of program.commands) c.exitOverride().configureOutput({ writeErr: () => undefined });
  return program;
}

/**
 * Print one line for the user and return the exit code. The only place errors become exit codes:
 * 0 ok, 2-8 the documented failures (SwiftFetchError), 128 + N for signal N (130 Ctrl-C, 143
 * SIGTERM, 141 when stdout closed under us), 1 only for internal errors.
 */
function report(e: unknown): number {
  if (e instanceof CommanderError) {
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return ExitCode.ok;
    process.stderr.write(`swift-fetch: ${e.message.replace(/^error: /, '')}\n`);
    return ExitCode.usage;
  }
  if (isSwiftFetchError(e)) {
    process.stderr.write(`swift-fetch: ${e.message}\n`);
    return e.exitCode;
  }
  const interrupted = interruptionOf(e);
  if (interrupted) {
    // A closed stdout is the reader's choice (`| head`): no message, as a process killed by SIGPIPE.
    if (interrupted.why !== 'EPIPE') process.stderr.write('swift-fetch: interrupted\n');
    return interrupted.exitCode;
  }
  // Anything else is a bug of ours: exit 1, with what a bug report needs.
  process.stderr.write(`swift-fetch: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
  return exitCodeOf(e);
}

export async function main(argv: string[]): Promise<void> {
  let code: number = ExitCode.ok;
  watchStdout();
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    code = report(e);
  }
  // Give pending stdout writes a chance to drain before exiting (pipes are asynchronous); a write
  // that finds the reader gone ends as a SIGPIPE would have.
  if (stdoutClosed) process.exit(code === ExitCode.ok ? 141 : code);
  process.stdout.write('', () => process.exit(stdoutClosed && code === ExitCode.ok ? 141 : code));
}
