import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { ExitCode, exitCodeOf, isSwiftFetchError } from '../core/errors.js';
import * as bundle from './commands/bundle.js';
import * as daemon from './commands/daemon.js';
import * as gc from './commands/gc.js';
import * as init from './commands/init.js';
import * as ls from './commands/ls.js';
import * as path from './commands/path.js';
import * as pull from './commands/pull.js';
import * as push from './commands/push.js';
import * as rm from './commands/rm.js';
import * as verify from './commands/verify.js';

const COMMANDS: Array<{ register(program: Command): void }> = [pull, push, path, verify, ls, rm, gc, daemon, init, bundle];

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
    .option('--store <dir>', 'store directory (env SWIFT_FETCH_STORE)')
    .option('--state-dir <dir>', 'node-local state directory (env SWIFT_FETCH_STATE_DIR)')
    .option('--json', 'machine-readable NDJSON on stdout')
    .option('-q, --quiet', 'no progress output')
    .option('-v, --verbose', 'info-level logs on stderr')
    .option('--log-level <level>', 'log level: trace, debug, info, warn, error (env SWIFT_FETCH_LOG_LEVEL)')
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ writeErr: () => undefined });
  for (const c of COMMANDS) c.register(program);
  for (const c of program.commands) c.exitOverride().configureOutput({ writeErr: () => undefined });
  return program;
}

/** Print one line for the user and return the exit code. The only place errors become exit codes. */
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
  if ((e as Error)?.name === 'AbortError' || (e as Error)?.message === 'interrupted') {
    process.stderr.write('swift-fetch: interrupted\n');
    return 130;
  }
  process.stderr.write(`swift-fetch: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
  return exitCodeOf(e);
}

export async function main(argv: string[]): Promise<void> {
  let code: number = ExitCode.ok;
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    code = report(e);
  }
  // Give pending stdout writes a chance to drain before exiting (pipes are asynchronous).
  process.stdout.write('', () => process.exit(code));
}
