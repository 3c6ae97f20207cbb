/**
 * A swarm node (`node-child.ts`) in its own process, so a test can SIGKILL it, restart it on the
 * same disk, or run it in a network namespace (`prefix`: `ip netns exec NS`). Its line protocol's
 * messages are collected; `next` waits for one that matches (and fails if the process exits first).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { repoRoot } from '../support/index.js';
import { SwarmNode, type NodeOptions } from './harness.js';

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
      // 'close', not 'exit': the lines the process wrote before it died are still in the pipe at
      // 'exit', and a test that counts what the node held when killed must read them all.
      const closed = new Promise((r) => c.once('close', r));
      c.kill('SIGKILL');
      await closed;
    },
  };
}

/**
 * Three nodes joined by a static list: one child process (killable) and two in this process.
 * `track` is told of the child and its directory before anything can fail, for the caller's cleanup.
 */
export async function swarmWithChild(opts: NodeOptions, track: (c: NodeChild, dir: string) => void) {
  const child = spawnNodeChild(opts as unknown as Record<string, unknown>);
  const hello = await child.next((m) => typeof m.url === 'string');
  const childUrl = hello.url as string;
  track(child, hello.dir as string);
  const a = await SwarmNode.start(opts);
  const b = await SwarmNode.start(opts);
  const urls = [a.url, b.url, childUrl];
  child.send({ static: urls });
  await Promise.all([a, b].map((n) => n.join({ static: urls })));
  const childId = (await child.next((m) => typeof m.joined === 'string')).joined as string;
  await Promise.all([a, b].map((n) => n.p2p!.discovery.refresh()));
  return { child, childUrl, childDir: hello.dir as string, childId, a, b, urls };
}
