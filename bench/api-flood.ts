/**
 * Flood of on-demand pulls (issue 12, item 3): POSTs of distinct refs the hub does not have, sent
 * to a real daemon process (the built CLI) that pulls from the fake hub. Reports the daemon's RSS
 * before, right after, at the end and at its peak (VmHWM), the answers by status, and the hub
 * requests the flood caused, during it and in the minutes after.
 *
 *   npm run build && node --import tsx bench/api-flood.ts [--posts 20000] [--in-flight 64]
 *       [--after 150] [--api '{"requestsPerMinute":0}'] [--repo DIR]
 *
 * `--api` is put under the config's `api:` key (JSON); `--repo` runs another checkout's built CLI
 * (e.g. an older commit, for a before/after), which must accept that config.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { freePort } from '../test/support/net.js';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { startFakeHub } from '../test/fakehub/index.js';

const { values } = parseArgs({
  options: {
    posts: { type: 'string', default: '20000' },
    'in-flight': { type: 'string', default: '64' },
    after: { type: 'string', default: '150' },
    api: { type: 'string' },
    repo: { type: 'string', default: resolve(import.meta.dirname, '..') },
  },
});
const posts = Number(values.posts);
const inFlight = Number(values['in-flight']);
const afterS = Number(values.after);


async function memory(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

const MB = (n: number) => `${(n / 1e6).toFixed(0)} MB`;

const hub = await startFakeHub();
const dir = await mkdtemp(join(tmpdir(), 'sf-flood-'));
const port = await freePort();
const api = values.api ? `api: ${values.api}\n` : '';
await writeFile(join(dir, 'config.yaml'), `store: ${join(dir, 'store')}\nstateDir: ${join(dir, 'state')}\nlisten: 127.0.0.1:${port}\nlogLevel: info\n${api}`);
const env: NodeJS.ProcessEnv = { ...process.env, HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HTTPS_PROXY: '', HTTP_PROXY: '' };
delete env.HF_TOKEN;
const daemon = spawn(process.execPath, [join(values.repo!, 'bin/swift-fetch.js'), 'daemon', '--config', join(dir, 'config.yaml')], { env, stdio: ['ignore', 'ignore', 'ignore'] });
const base = `http://127.0.0.1:${port}`;
const agent = new Agent({ connections: inFlight, keepAliveTimeout: 10_000 });

try {
  for (let i = 0; ; i++) {
    try {
      const r = await request(`${base}/healthz`, { dispatcher: agent });
      await r.body.dump();
      if (r.statusCode === 200) break;
    } catch {
      if (i > 200) throw new Error('the daemon did not start');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 1_000));
  const before = await memory(daemon.pid!);
  hub.resetStats();

  const statuses = new Map<number, number>();
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < posts) {
        const i = next++;
        const r = await request(`${base}/v1/pulls`, {
          method: 'POST',
          dispatcher: agent,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ ref: `hf://flood/nonexistent-${i}` }),
        });
        await r.body.dump();
        statuses.set(r.statusCode, (statuses.get(r.statusCode) ?? 0) + 1);
      }
    }),
  );
  const floodS = (performance.now() - started) / 1000;
  const right = await memory(daemon.pid!);
  const hubDuring = hub.log.length;
  await new Promise((r) => setTimeout(r, afterS * 1000));
  const end = await memory(daemon.pid!);
  const models = await request(`${base}/v1/models`, { dispatcher: agent });
  const listed = ((await models.body.json()) as unknown[]).length;

  console.log(`| what | value |\n| --- | --- |`);
  console.log(`| config api | ${values.api ?? '(defaults)'} |`);
  console.log(`| POSTs | ${posts} in ${floodS.toFixed(1)} s (${inFlight} in flight) |`);
  console.log(`| answers | ${[...statuses].sort().map(([s, n]) => `${s}: ${n}`).join(', ')} |`);
  console.log(`| RSS before / right after / ${afterS} s later | ${MB(before.rss)} / ${MB(right.rss)} / ${MB(end.rss)} |`);
  console.log(`| peak RSS (VmHWM) | ${MB(end.peak)} |`);
  console.log(`| hub requests during the flood | ${hubDuring} |`);
  console.log(`| hub requests in the ${afterS} s after | ${hub.log.length - hubDuring} |`);
  console.log(`| models listed at the end | ${listed} |`);
} finally {
  daemon.kill('SIGTERM');
  await new Promise((r) => daemon.once('exit', r));
  await agent.close();
  await hub.close();
  await rm(dir, { recursive: true, force: true });
}
