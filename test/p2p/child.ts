/**
 * A swarm node (`node-child.ts`) in its own process, so a test can SIGKILL it, restart it on the
 * same disk, or run it in a network namespace (`prefix`: `ip netns exec NS`). Its line protocol's
 * messages are collected; `next` waits for one that matches (and fails if the process exits first).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { repoRoot } from '../support/index.js';

export interface NodeChild {
  child: ChildProcessWithoutNullStreams;
  messages: Array<Record<string, unknown>>;
  send(m: unknown): void;
  next(pred: (m: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** SIGKILL, resolved once the process is gone. */
  kill(): Promise<void>;
}

export function spawnNodeChild(opts: Record<string, unknown>, prefix: string[] = []): NodeChild {
  const argv = [...prefix, process.execPath, '--import', 'tsx', 'test/p2p/node-child.ts', JSON.stringify(opts)];
  const c = spawn(argv[0]!, argv.slice(1), { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
  const messages: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  let stderr = '';
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  c.once('exit', wake);
  createInterface({ input: c.stdout }).on('line', (l) => {
    try {
      messages.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      return;
    }
    wake();
  });
  const gone = () => c.exitCode !== null || c.signalCode !== null;
  return {
    child: c,
    messages,
    send: (m) => c.stdin.write(JSON.stringify(m) + '\n'),
    async next(pred) {
      for (;;) {
        const m = messages.find(pred);
        if (m) return m;
        if (gone()) throw new Error(`node process exited: ${stderr}`);
        await new Promise<void>((r) => waiters.push(r));
      }
    },
    async kill() {
      if (gone()) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await exited;
    },
  };
}
