/** Running a tool for the benchmarks: wall time, CPU (GNU time) and peak RSS of its process tree. */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { createInterface } from 'node:readline';

export const TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

export function treeRss(rootPid, includeRoot) {
  const kids = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch {}
  }
  let total = 0;
  const stack = includeRoot ? [rootPid] : [...(kids.get(rootPid) ?? [])];
  while (stack.length) {
    const pid = stack.pop();
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) total += Number(m[1]) * 1024;
    } catch {}
    stack.push(...(kids.get(pid) ?? []));
  }
  return total;
}

/**
 * Run a command under GNU time (CPU seconds of it and every descendant it waited for), sampling
 * the RSS of its process tree every 50 ms; `onLine` sees stdout lines.
 */
export function measure(cmd, argv, { env, onLine, onSpawn } = {}) {
  return new Promise((resolve) => {
    const timeFile = TIME ? join(mkdtempSync(join(tmpdir(), 'sf-bench-time-')), 't') : undefined;
    const [c, a] = TIME ? [TIME, ['-f', '%U %S', '-o', timeFile, cmd, ...argv]] : [cmd, argv];
    const t0 = performance.now();
    const child = spawn(c, a, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    onSpawn?.(child);
    let peak = 0;
    const timer = setInterval(() => {
      peak = Math.max(peak, treeRss(child.pid, !TIME));
    }, 50);
    const out = [];
    let err = '';
    createInterface({ input: child.stdout }).on('line', (l) => {
      out.push(l);
      onLine?.(l, child);
    });
    child.stderr.on('data', (d) => {
      if (err.length < 8000) err += d;
    });
    child.on('exit', (code, signal) => {
      clearInterval(timer);
      const ms = performance.now() - t0;
      let cpu;
      if (timeFile) {
        try {
          const last = readFileSync(timeFile, 'utf8').trim().split('\n').pop();
          const [u, s] = last.split(' ').map(Number);
          if (Number.isFinite(u) && Number.isFinite(s)) cpu = { user: u, sys: s };
        } catch {}
        rmSync(dirname(timeFile), { recursive: true, force: true });
      }
      // GNU time reports a killed child as "Command terminated by signal N" on its own line.
      resolve({ ms, peak, code: signal ? null : code, signal: signal ?? (/terminated by signal (\d+)/.exec(err)?.[1] ? 'SIGKILL' : null), out, err, child, cpu });
    });
  });
}

