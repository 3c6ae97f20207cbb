import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export interface FakeHubProcess {
  child: ChildProcess;
  hfEndpoint: string;
  msEndpoint: string;
  /** Everything the process wrote to stderr so far. */
  stderr(): string;
  /** SIGKILL (idempotent); resolves when the process is gone. */
  kill(): Promise<void>;
}

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));

/**
 * Runs the standalone fake hub (`main.ts`) as a real child process and waits for its endpoint
 * lines. `args` are main.ts flags, e.g. ['--root', dir, '--port', '0'].
 */
export function spawnFakeHub(args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<FakeHubProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    cwd: opts.cwd ?? fileURLToPath(new URL('../..', import.meta.url)),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  return new Promise((resolve, reject) => {
    const found: Record<string, string> = {};
    const timer = setTimeout(() => {
      void kill();
      reject(new Error(`fake hub did not start within ${opts.timeoutMs ?? 60_000} ms: ${err}`));
    }, opts.timeoutMs ?? 60_000);
    const early = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`fake hub exited with ${code} before printing its endpoints: ${err}`));
    };
    child.once('exit', early);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const m = /^(HF_ENDPOINT|MODELSCOPE_ENDPOINT)=(.+)$/.exec(line);
      if (m) found[m[1]!] = m[2]!;
      if (found.HF_ENDPOINT && found.MODELSCOPE_ENDPOINT) {
        clearTimeout(timer);
        child.off('exit', early);
        resolve({ child, hfEndpoint: found.HF_ENDPOINT, msEndpoint: found.MODELSCOPE_ENDPOINT, stderr: () => err, kill });
      }
    });
  });
}
