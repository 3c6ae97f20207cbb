import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { MiB, blobRequest, makeContent, serveRange, sha256, startServer, tempDir, type TestServer } from './helpers.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '../..');
// `node --import tsx`, not the tsx binary: the binary forks a second process that SIGKILL would miss.

const fixture = join(here, 'fixtures/pull.ts');

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Line {
  event?: { type: string; resumedBytes?: number; bytes?: number };
  chunk?: { start: number; end: number };
  result?: Array<{ path: string; sha256: string }>;
  error?: { name: string; code: string; message: string };
}

function pull(spec: unknown): { child: ChildProcess; lines: Line[]; exit: Promise<number | null>; onLine: (f: (l: Line) => void) => void } {
  // `exit` waits for stdout to close too, so every line the process printed has been read.
  const child = spawn(process.execPath, ['--import', 'tsx', fixture], { cwd: root, env: { ...process.env, SF_PULL: JSON.stringify(spec) }, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: Line[] = [];
  const listeners: Array<(l: Line) => void> = [];
  const rl = createInterface({ input: child.stdout! }).on('line', (s) => {
    const l = JSON.parse(s) as Line;
    lines.push(l);
    for (const f of listeners) f(l);
  });
  const closed = new Promise<void>((r) => rl.on('close', () => r()));
  const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code))).then(async (code) => {
    await closed;
    return code;
  });
  cleanups.push(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return { child, lines, exit, onLine: (f) => listeners.push(f) };
}

describe('resume after SIGKILL', () => {
  it('a killed pull loses at most the chunks in flight; the next run finishes and verifies', async () => {
    const size = 48 * MiB;
    const content = makeContent(size, 31);
    // Capped per connection so the kill lands mid-file.
    const srv: TestServer = await startServer((req, res) => serveRange(srv, req, res, content, { rate: 8 * MiB, etag: 'x' }));
    cleanups.push(() => srv.close());
    const t = tempDir();
    cleanups.push(t.cleanup);
    const connections = 4;
    // Long requests (8 MiB spans); resume state is kept per 1 MiB block, so a kill costs about a
    // block per connection, not a span.
    const chunkSize = 8 * MiB;
    const spec = {
      requests: [blobRequest(content, `${srv.url}/f`)],
      opts: { partialDir: join(t.dir, 'partial'), stateDir: join(t.dir, 'state'), connections, chunkSize },
      events: true,
    };
    const first = pull(spec);
    let durable = 0;
    await new Promise<void>((resolve) => {
      first.onLine((l) => {
        if (l.chunk) durable += l.chunk.end - l.chunk.start;
        if (srv.bytesSent() >= 0.4 * size) resolve();
      });
    });
    first.child.kill('SIGKILL');
    expect(await first.exit).toBe(null);
    const sentBeforeKill = srv.bytesSent();
    expect(sentBeforeKill).toBeLessThan(size);
    // What the killed process had written to its partial file (progress events come after writes).
    const written = first.lines.reduce((n, l) => n + (l.event?.type === 'progress' ? l.event.bytes ?? 0 : 0), 0);

    const second = pull(spec);
    expect(await second.exit).toBe(0);
    const res = second.lines.find((l) => l.result)!.result!;
    expect(res[0]!.sha256).toBe(sha256(content));
    expect(readFileSync(res[0]!.path).equals(content)).toBe(true);
    const resumed = second.lines.find((l) => l.event?.type === 'blob-start')!.event!.resumedBytes!;
    // Everything the first run reported durable (and maybe more) was kept.
    expect(resumed).toBeGreaterThanOrEqual(durable);
    const secondBytes = srv.bytesSent() - sentBeforeKill;
    // Only what was missing, plus at most what an end-game split cut off mid-flight.
    expect(secondBytes).toBeGreaterThanOrEqual(size - resumed);
    expect(secondBytes).toBeLessThanOrEqual(size - resumed + 4 * MiB);
    // Of what the killed process had written, it lost at most the block each connection was in
    // the middle of: resume state is per 1 MiB block.
    expect(written - resumed).toBeLessThanOrEqual(connections * MiB);
    // The origin also sent bytes the process never read: they sat in socket buffers, which die
    // with it. How much depends on the kernel's buffer autotuning and on CPU load (on two busy
    // cores this test saw over 10 MiB), not on the engine, so it is not bounded here. That is why
    // this test does not check DESIGN.md's goal (waste <= 2 % of the file): on a 48 MiB file over
    // loopback the ratio would measure the kernel. The goal is measured on a 2 GiB file in bench/
    // (docs/benchmarks.md, "Resume").
    expect(readdirSync(spec.opts.partialDir)).toHaveLength(1);
  });

  it('exit codes reach the process: a corrupt origin exits 5', async () => {
    const content = makeContent(MiB, 32);
    const srv: TestServer = await startServer((req, res) => serveRange(srv, req, res, content, { corruptAt: 5 }));
    cleanups.push(() => srv.close());
    const t = tempDir();
    cleanups.push(t.cleanup);
    const p = pull({ requests: [blobRequest(content, `${srv.url}/f`)], opts: { partialDir: join(t.dir, 'partial'), stateDir: join(t.dir, 'state') } });
    expect(await p.exit).toBe(5);
    expect(p.lines.at(-1)!.error!.code).toBe('ESF_INTEGRITY');
    expect(readdirSync(join(t.dir, 'partial'))).toEqual([]);
  });
});
