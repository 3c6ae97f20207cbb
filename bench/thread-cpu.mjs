/**
 * Preload (`node --import ./bench/thread-cpu.mjs …`): at exit, print to stderr one JSON line with
 * the process's CPU seconds split by thread: the main thread, V8's platform threads (GC marking and
 * sweeping, compilation), libuv's pool (file writes), and threads already gone at exit (the hash
 * worker, which the engine terminates before returning). Linux only (/proc).
 */
import { readFileSync, readdirSync } from 'node:fs';

process.on('exit', () => {
  const ru = process.resourceUsage();
  const total = (ru.userCPUTime + ru.systemCPUTime) / 1e6;
  const threads = [];
  for (const t of readdirSync('/proc/self/task')) {
    try {
      const st = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
      const comm = readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim();
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      threads.push({ tid: Number(t), comm, user: Number(f[11]) / 100, sys: Number(f[12]) / 100 });
    } catch {}
  }
  threads.sort((a, b) => a.tid - b.tid);
  const main = threads[0];
  const sum = (a) => a.reduce((n, t) => n + t.user + t.sys, 0);
  // libuv's pool threads spend their time in the kernel (write, fsync); V8's in user space.
  const pool = threads.filter((t) => t !== main && (t.comm.startsWith('libuv') || t.sys > t.user * 3));
  const v8 = threads.filter((t) => t !== main && !pool.includes(t));
  const out = {
    cpu: +total.toFixed(2),
    user: +(ru.userCPUTime / 1e6).toFixed(2),
    sys: +(ru.systemCPUTime / 1e6).toFixed(2),
    main: +(main.user + main.sys).toFixed(2),
    mainUser: +main.user.toFixed(2),
    mainSys: +main.sys.toFixed(2),
    v8Threads: +sum(v8).toFixed(2),
    fsPool: +sum(pool).toFixed(2),
    exitedThreads: +Math.max(0, total - sum(threads)).toFixed(2),
    maxRssMB: Math.round(ru.maxRSS / 1024),
  };
  process.stderr.write(`THREAD-CPU ${JSON.stringify(out)}\n`);
});
