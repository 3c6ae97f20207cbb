/**
 * Swarm nodes in real network namespaces: a bridge on the host, one namespace per node attached by a
 * veth pair with a `tc tbf` cap both ways, each node a child process (`node-child.ts`) started with
 * `ip netns exec`. Needs root and iproute2: `missingNetns()` says why not (tests skip with the
 * reason, and fail in CI). Traffic stays between the bridge and the namespaces the lab created;
 * `cleanup()` kills the children and removes namespaces, veths and the bridge.
 */
import { execFileSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { spawnNodeChild, type NodeChild } from './child.js';

export function missingNetns(): string | undefined {
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

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
const tc = (...args: string[]) => execFileSync('tc', args, { stdio: 'pipe' });

export class NetnsLab {
  /** Unique per process and lab, so labs of test files running at once do not collide. */
  private readonly tag: number;
  readonly subnet: string;
  readonly bridge: string;
  readonly namespaces: string[] = [];
  /** The host end of each node's veth, by node index. */
  readonly hostLinks: string[] = [];
  private readonly children: NodeChild[] = [];
  private readonly childDirs: string[] = [];

  constructor(salt: number) {
    this.tag = ((process.pid * 7 + salt) % 9000) + 1000;
    this.subnet = `10.231.${(this.tag % 200) + 20}`;
    this.bridge = `sfpb${this.tag}`;
  }

  /** The bridge (the hub listens on `${subnet}.1`) and `n` capped nodes; their addresses. */
  setUp(n: number, rate: string): string[] {
    ip('link', 'add', this.bridge, 'type', 'bridge');
    ip('addr', 'add', `${this.subnet}.1/24`, 'dev', this.bridge);
    ip('link', 'set', this.bridge, 'up');
    const addrs: string[] = [];
    for (let i = 0; i < n; i++) {
      const ns = `sfp${this.tag}-${i}`;
      const host = `sfph${this.tag}${i}`;
      const inner = `sfpn${this.tag}${i}`;
      ip('netns', 'add', ns);
      this.namespaces.push(ns);
      ip('link', 'add', host, 'type', 'veth', 'peer', 'name', inner);
      this.hostLinks.push(host);
      ip('link', 'set', inner, 'netns', ns);
      ip('link', 'set', host, 'master', this.bridge);
      ip('link', 'set', host, 'up');
      const addr = `${this.subnet}.${10 + i}`;
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

  /**
   * Cut node `i` off: its link goes down, so packets to and from it are dropped without a reset,
   * as with a failed switch port or a partitioned zone. Peers see silence, not refusals.
   */
  partition(i: number): void {
    ip('link', 'set', this.hostLinks[i]!, 'down');
  }

  /** A swarm node (`node-child.ts`) in namespace `i`. */
  node(i: number, opts: Record<string, unknown>): NodeChild {
    const n = spawnNodeChild(opts, ['ip', 'netns', 'exec', this.namespaces[i]!]);
    this.children.push(n);
    // A SIGKILLed node cannot remove its directory.
    void n.next((m) => typeof m.dir === 'string').then((m) => this.childDirs.push(m.dir as string), () => undefined);
    return n;
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.children.map((c) => c.kill()));
    await Promise.all(this.childDirs.map((d) => rm(d, { recursive: true, force: true })));
    for (const ns of this.namespaces) {
      try {
        ip('netns', 'del', ns);
      } catch {
        /* already gone */
      }
    }
    for (const l of [...this.hostLinks, this.bridge]) {
      try {
        ip('link', 'del', l);
      } catch {
        /* removed with its namespace */
      }
    }
  }
}
