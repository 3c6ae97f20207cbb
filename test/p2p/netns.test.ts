/**
 * The swarm across real network namespaces with `tc` link caps: each node is a child process in
 * its own namespace, attached by a veth pair to a bridge where the fake hub listens. Needs root
 * and iproute2; without them the test is skipped with the reason, and in CI it fails.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { repoRoot } from '../support/index.js';
import { inCI, makeContent } from '../transfer/helpers.js';
import { blobRequestFor } from './harness.js';

const MiB = 1024 * 1024;
const TOKEN = 'peer-token-netns';

function missing(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    execFileSync('tc', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'iproute2 (ip, tc) is not installed';
  }
  return undefined;
}
const why = missing();
if (why && inCI) throw new Error(`netns test cannot run in CI: ${why}`);

const tag = (process.pid % 9000) + 1000;
const subnet = `10.231.${tag % 200 + 20}`;
const bridge = `sfpb${tag}`;
const namespaces: string[] = [];
const links: string[] = [];
const children: ChildProcessWithoutNullStreams[] = [];
const childDirs: string[] = [];
let hub: FakeHub | undefined;

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
const tc = (...args: string[]) => execFileSync('tc', args, { stdio: 'pipe' });

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(childDirs.map((d) => rm(d, { recursive: true, force: true })));
  await hub?.close();
  for (const ns of namespaces) {
    try {
      ip('netns', 'del', ns);
    } catch {
      /* already gone */
    }
  }
  for (const l of [...links, bridge]) {
    try {
      ip('link', 'del', l);
    } catch {
      /* removed with its namespace */
    }
  }
});

function setUpNetwork(n: number, rate: string): string[] {
  ip('link', 'add', bridge, 'type', 'bridge');
  links.push(bridge);
  ip('addr', 'add', `${subnet}.1/24`, 'dev', bridge);
  ip('link', 'set', bridge, 'up');
  const addrs: string[] = [];
  for (let i = 0; i < n; i++) {
    const ns = `sfp${tag}-${i}`;
    const host = `sfph${tag}${i}`;
    const inner = `sfpn${tag}${i}`;
    ip('netns', 'add', ns);
    namespaces.push(ns);
    ip('link', 'add', host, 'type', 'veth', 'peer', 'name', inner);
    links.push(host);
    ip('link', 'set', inner, 'netns', ns);
    ip('link', 'set', host, 'master', bridge);
    ip('link', 'set', host, 'up');
    const addr = `${subnet}.${10 + i}`;
    ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', inner);
    ip('-n', ns, 'link', 'set', inner, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    // The node's link: capped both ways (egress inside the namespace, egress of the host end).
    tc('-n', ns, 'qdisc', 'add', 'dev', inner, 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '100ms');
    tc('qdisc', 'add', 'dev', host, 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '100ms');
    addrs.push(addr);
  }
  return addrs;
}

function child(ns: string, host: string) {
  const opts = { token: TOKEN, connections: 4, chunkSize: MiB, host };
  const c = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', 'test/p2p/node-child.ts', JSON.stringify(opts)], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(c);
  const messages: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  let stderr = '';
  c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  createInterface({ input: c.stdout }).on('line', (l) => {
    try {
      messages.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      return;
    }
    for (const w of waiters.splice(0)) w();
  });
  const next = async (pred: (m: Record<string, unknown>) => boolean) => {
    for (;;) {
      const m = messages.find(pred);
      if (m) return m;
      if (c.exitCode !== null) throw new Error(`node in ${ns} exited: ${stderr}`);
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  return { send: (m: unknown) => c.stdin.write(JSON.stringify(m) + '\n'), next };
}

describe.skipIf(why !== undefined)(`swarm across network namespaces${why ? ` (skipped: ${why})` : ''}`, () => {
  it('three capped nodes started at once end verified with about one origin copy', async () => {
    const addrs = setUpNetwork(3, '200mbit');
    hub = await startFakeHub({ host: `${subnet}.1`, cdnHost: `${subnet}.1` });
    const repo = await hub.addRepo({ id: 'org/netns', files: { 'model.safetensors': makeContent(16 * MiB, 61) } });
    const f = repo.files[0]!;
    const nodes = addrs.map((a, i) => child(namespaces[i]!, a));
    const hellos = await Promise.all(nodes.map((n) => n.next((m) => typeof m.url === 'string')));
    childDirs.push(...hellos.map((m) => m.dir as string));
    const urls = hellos.map((m) => m.url as string);
    for (const n of nodes) n.send({ static: urls });
    await Promise.all(nodes.map((n) => n.next((m) => typeof m.joined === 'string')));
    hub.resetStats();
    for (const n of nodes) n.send({ go: [blobRequestFor(hub.hfEndpoint, repo.id, repo.commit, f)] });
    const done = await Promise.all(nodes.map((n) => n.next((m) => m.done === true)));
    for (const d of done) expect(d.hashes).toEqual([f.sha256]);
    expect(hub.bytesSent()).toBeGreaterThanOrEqual(f.size);
    // DESIGN.md's goal is <= 1.05 origin copies; this bound is looser on purpose. The files here
    // are small (6-24 MiB) in 1 MiB chunks, so one chunk fetched twice (two nodes deciding in the same
    // instant, before either sees the other's claim) is already 4-17 % of a copy, and two cores
    // running every node make such races common. The goal is measured with real model sizes in
    // bench/p2p.mjs (docs/benchmarks.md, P2P); here the bound catches a swarm that stopped sharing.
    expect(hub.bytesSent()).toBeLessThanOrEqual(1.3 * f.size);
    expect(done.reduce((n, d) => n + (d.bytesFromPeers as number), 0)).toBeGreaterThan(f.size);
    for (const n of nodes) n.send({ exit: true });
  });
});
