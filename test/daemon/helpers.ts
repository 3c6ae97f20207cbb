/** Shared helpers for the daemon and lease tests: real child processes, real HTTP. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const REPO_ROOT = new URL('../../', import.meta.url).pathname;

export async function tempDir(prefix = 'sf-daemon-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export interface Child {
  proc: ChildProcess;
  /** Lines printed on stdout so far. */
  lines: string[];
  /** Lines printed on stderr so far. */
  errLines: string[];
  /** Resolve with the first stdout line matching `pred` (already printed or future). */
  waitLine(pred: (line: string) => boolean, what?: string): Promise<string>;
  waitErrLine(pred: (line: string) => boolean, what?: string): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Run a TypeScript file (through tsx) or a JS file in a new Node process. */
export function spawnNode(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; ts?: boolean } = {}): Child {
  const nodeArgs = opts.ts === false ? args : ['--import', 'tsx', ...args];
  const proc = spawn(process.execPath, nodeArgs, { cwd: opts.cwd ?? REPO_ROOT, env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const errLines: string[] = [];
  const waiters: Array<{ err: boolean; pred: (l: string) => boolean; resolve: (l: string) => void }> = [];
  const feed = (err: boolean) => (line: string) => {
    (err ? errLines : lines).push(line);
    for (const w of [...waiters]) {
      if (w.err === err && w.pred(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  };
  createInterface({ input: proc.stdout! }).on('line', feed(false));
  createInterface({ input: proc.stderr! }).on('line', feed(true));
  const exited = once(proc, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  const wait = (err: boolean) => (pred: (l: string) => boolean, what = 'line') =>
    new Promise<string>((resolve, reject) => {
      const hit = (err ? errLines : lines).find(pred);
      if (hit !== undefined) return resolve(hit);
      waiters.push({ err, pred, resolve });
      void exited.then(({ code, signal }) =>
        reject(new Error(`process exited (code ${code}, signal ${signal}) before printing ${what}\nstdout:\n${lines.join('\n')}\nstderr:\n${errLines.join('\n')}`)),
      );
    });
  return { proc, lines, errLines, waitLine: wait(false), waitErrLine: wait(true), exited };
}

/** Poll `fn` until it returns a value that is not undefined/false (bounded by the test timeout). */
export async function until<T>(fn: () => T | undefined | false | Promise<T | undefined | false>, intervalMs = 25, limitMs = 90_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() - start > limitMs) throw new Error(`condition not met within ${limitMs} ms: ${fn.toString().slice(0, 200)}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Parse Prometheus text exposition strictly: every line is a comment (# HELP / # TYPE), blank,
 * or `name{labels} value`; throws on anything else. Returns samples.
 */
export function parsePrometheus(text: string): Array<{ name: string; labels: Record<string, string>; value: number }> {
  const samples: Array<{ name: string; labels: Record<string, string>; value: number }> = [];
  const types = new Map<string, string>();
  const sampleRe = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (-?(?:\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|Inf|\+Inf|NaN))(?: -?\d+)?$/;
  for (const [i, line] of text.split('\n').entries()) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) {
      if (!/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$/.test(line)) throw new Error(`line ${i + 1}: bad HELP: ${line}`);
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      if (!m) throw new Error(`line ${i + 1}: bad TYPE: ${line}`);
      if (types.has(m[1]!)) throw new Error(`line ${i + 1}: TYPE repeated for ${m[1]}`);
      types.set(m[1]!, m[2]!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = sampleRe.exec(line);
    if (!m) throw new Error(`line ${i + 1}: not a Prometheus sample: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const lm of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]!] = lm[2]!;
    const base = m[1]!.replace(/_(bucket|sum|count)$/, '');
    if (!types.has(m[1]!) && !types.has(base)) throw new Error(`line ${i + 1}: sample ${m[1]} without a TYPE line`);
    samples.push({ name: m[1]!, labels, value: Number(m[3]!.replace('+Inf', 'Infinity').replace('Inf', 'Infinity')) });
  }
  return samples;
}

/**
 * How to run `swift-fetch <command>` in a test: the built CLI (`bin/swift-fetch.js`, after
 * `npm run build`), so that exit codes come from src/cli/main.ts itself and not from a copy of it.
 */
export function cliArgs(command: 'daemon' | 'gc'): { args: string[]; ts: boolean } {
  const main = join(REPO_ROOT, 'dist/cli/main.js');
  if (!existsSync(main) || !readFileSync(main, 'utf8').includes(`commands/${command}.js`)) {
    throw new Error(`the built CLI does not have the ${command} command: run npm run build first`);
  }
  return { args: ['bin/swift-fetch.js'], ts: false };
}
