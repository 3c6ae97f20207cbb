import { spawn } from 'node:child_process';
import { cliPath, repoRoot } from './paths.js';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Added to (and overriding) the parent environment; a value of undefined removes the variable. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Written to stdin, which is then closed. */
  input?: string | Buffer;
  /** SIGKILL the child after this long (default 120 s); the result then has signal 'SIGKILL'. */
  timeoutMs?: number;
}

/** process.env with `extra` applied: a value of undefined removes the variable. */
export function mergedEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Spawns a real process and collects its output. Never rejects on a non-zero exit. */
export function run(command: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: opts.cwd ?? repoRoot,
      env: mergedEnv(opts.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs `node <repo>/bin/swift-fetch.js ...args` (the built CLI). */
export function runCli(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(process.execPath, [cliPath, ...args], opts);
}
