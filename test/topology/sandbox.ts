/**
 * A node and its pods out of Linux namespaces, for running rendered containers as real processes.
 *
 * - NodeNetwork: a network namespace standing for the node, with its own loopback and a veth pair
 *   to this process's namespace (where the fake hub listens on `gatewayIP`). Its address is the
 *   node's `status.hostIP`. Pods share it (pod IP = host IP), so a hostPort is the container port;
 *   the harness refuses a hostPort that differs from its containerPort instead of faking a NAT.
 * - PodSandbox: what the pause container is in Kubernetes. One process holds the pod's mount
 *   namespace (in the node's network namespace), in which every emptyDir is a tmpfs; ConfigMap and
 *   Secret volumes are written out from the rendered objects; hostPath volumes are directories
 *   under the node's root folder (`DirectoryOrCreate` creates them root-owned, as the kubelet does).
 * - Each container runs in a mount, PID and UTS namespace of its own, entered from the sandbox's:
 *   a tmpfs root with the machine's /usr and /etc overlaid (writes land in the container's layer,
 *   never on the host), the image's files, the volume mounts (read-only where the spec says so or
 *   where the kubelet always does it: ConfigMap and Secret volumes), /proc of its own PID
 *   namespace, the pod name as hostname; the root is remounted read-only for
 *   readOnlyRootFilesystem; then `chroot`, `setpriv` (uid, gid, groups, bounding set,
 *   no_new_privs) and `env -i` with exactly the planned environment.
 *
 * Every mount happens inside those private namespaces: nothing outlives the processes, and the
 * host's mount table is never touched (closing a sandbox checks that before deleting anything).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { lstatSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { chmod, chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { K8sObject, PodSpec, Volume } from '../chart/support.js';
import { run, type RunResult } from '../support/index.js';
import type { Image } from './images.js';
import type { ContainerPlan } from './kubelet.js';

/** One shell word. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

let networks = 0;

export class NodeNetwork {
  private constructor(
    readonly ns: string,
    private readonly hostLink: string,
    /** The node's address: what `status.hostIP` (and, here, `status.podIP`) resolve to. */
    readonly hostIP: string,
    /** This process's end of the link; the fake hub listens here. */
    readonly gatewayIP: string,
  ) {}

  /** A /30 per network, picked from the process id so parallel test files do not collide. */
  static create(): NodeNetwork {
    const n = networks++;
    const idx = (process.pid * 8 + n) % 16384;
    const base = `10.233.${idx >> 6}.${(idx & 63) * 4}`;
    const [a, b, c] = base.split('.');
    const last = Number(base.split('.')[3]);
    const gw = `${a}.${b}.${c}.${last + 1}`;
    const node = `${a}.${b}.${c}.${last + 2}`;
    const tag = `${process.pid % 100000}${n}`;
    const ns = `sftopo-${tag}`;
    const host = `sftg${tag}`.slice(0, 15);
    const inner = `sftn${tag}`.slice(0, 15);
    const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
    ip('netns', 'add', ns);
    const net = new NodeNetwork(ns, host, node, gw);
    try {
      ip('link', 'add', host, 'type', 'veth', 'peer', 'name', inner);
      ip('link', 'set', inner, 'netns', ns);
      ip('addr', 'add', `${gw}/30`, 'dev', host);
      ip('link', 'set', host, 'up');
      ip('-n', ns, 'addr', 'add', `${node}/30`, 'dev', inner);
      ip('-n', ns, 'link', 'set', inner, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    } catch (e) {
      net.close();
      throw e;
    }
    return net;
  }

  /** A host route from the node to `ip` on this process's side (e.g. a hub started for another node). */
  reach(ip: string): void {
    execFileSync('ip', ['-n', this.ns, 'route', 'add', `${ip}/32`, 'via', this.gatewayIP], { stdio: 'pipe' });
  }

  close(): void {
    for (const args of [['netns', 'del', this.ns], ['link', 'del', this.hostLink]]) {
      try {
        execFileSync('ip', args, { stdio: 'pipe' });
      } catch {
        /* already gone (the veth goes with its namespace) */
      }
    }
  }
}

/** A started long-running container. */
export interface RunningContainer {
  output(): { stdout: string; stderr: string };
  /** Resolves when the container's process tree has exited. */
  exited: Promise<RunResult>;
  hasExited(): boolean;
  /** Host PID of the container's PID 1 (its /proc shows what the harness applied). */
  pid(): number;
  /** SIGTERM to the container's PID 1, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<RunResult>;
}

interface ResolvedVolume {
  path: string;
  /** ConfigMap and Secret volumes are always mounted read-only by the kubelet. */
  alwaysReadOnly: boolean;
}

/** Bytes of a Kubernetes quantity such as 256Mi or 1Gi (enough for emptyDir sizeLimit). */
function quantityBytes(q: string | number): number {
  const m = /^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(q));
  if (!m) throw new Error(`unsupported quantity ${q}`);
  const mult: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * (m[2] ? mult[m[2]]! : 1);
}

/** Mount points of this (the host's) mount namespace under `dir`. */
function hostMountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
}

export interface PodOptions {
  name: string;
  spec: PodSpec;
  objects: K8sObject[];
  net: NodeNetwork;
  /** The node's root folder: hostPath `/x/y` is `<nodeRoot>/x/y`. */
  nodeRoot: string;
  /** A folder this pod may fill (its volumes and container roots). */
  dir: string;
}

let containers = 0;

export class PodSandbox {
  private constructor(
    private readonly o: PodOptions,
    private readonly holder: ChildProcess,
    private readonly volumes: Map<string, ResolvedVolume>,
  ) {}

  get name(): string {
    return this.o.name;
  }

  static async start(o: PodOptions): Promise<PodSandbox> {
    await mkdir(join(o.dir, 'volumes'), { recursive: true });
    const fsGroup = o.spec.securityContext?.fsGroup as number | undefined;
    const volumes = new Map<string, ResolvedVolume>();
    const tmpfs: string[] = [];
    for (const v of o.spec.volumes ?? []) {
      const own = join(o.dir, 'volumes', v.name);
      if (v.hostPath) {
        volumes.set(v.name, { path: await hostPathVolume(o.nodeRoot, v), alwaysReadOnly: false });
      } else if (v.emptyDir) {
        await mkdir(own, { recursive: true });
        const size = (v.emptyDir as { sizeLimit?: string }).sizeLimit;
        // A fresh emptyDir is world-writable; with fsGroup the kubelet hands it to that group (setgid).
        const opts = [fsGroup !== undefined ? `mode=2777,gid=${fsGroup}` : 'mode=0777', ...(size ? [`size=${quantityBytes(size)}`] : [])];
        tmpfs.push(`mount -t tmpfs -o ${shq(opts.join(','))} ${shq(`emptydir-${v.name}`)} ${shq(own)}`);
        volumes.set(v.name, { path: own, alwaysReadOnly: false });
      } else if (v.configMap || v.secret) {
        await writeObjectVolume(own, v, o.objects, fsGroup);
        volumes.set(v.name, { path: own, alwaysReadOnly: true });
      } else {
        throw new Error(`volume ${v.name}: its type is not modelled by the topology harness (${Object.keys(v).join(', ')})`);
      }
    }
    // The pause process: holds the pod's mount namespace (with the emptyDir tmpfs) in the node's network.
    const script = ['set -eu', ...tmpfs, 'echo ready', 'exec sleep 2147483647'].join('\n');
    const holder = spawn('nsenter', [`--net=/run/netns/${o.net.ns}`, '--', 'unshare', '-m', '--propagation', 'private', '--', 'sh', '-c', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    await new Promise<void>((resolve, reject) => {
      let err = '';
      holder.stderr!.on('data', (b: Buffer) => (err += b.toString()));
      holder.stdout!.on('data', (b: Buffer) => {
        if (b.toString().includes('ready')) resolve();
      });
      holder.once('exit', (code) => reject(new Error(`pod ${o.name}: the sandbox process exited with ${code}: ${err}`)));
    });
    return new PodSandbox(o, holder, volumes);
  }

  /** Runs a container to completion (init containers, the checked main container). */
  async run(plan: ContainerPlan, image: Image, timeoutMs = 120_000): Promise<RunResult> {
    const args = await this.command(plan, image);
    return run(args[0]!, args.slice(1), { timeoutMs });
  }

  /** Starts a long-running container (the daemon). */
  async start(plan: ContainerPlan, image: Image): Promise<RunningContainer> {
    const args = await this.command(plan, image);
    const child = spawn(args[0]!, args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<RunResult>((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
    // The container's PID 1 is unshare's only child (nsenter execs unshare, which forks it).
    const pid = () => Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
    const stop = async (graceMs = 10_000): Promise<RunResult> => {
      if (child.exitCode === null && child.signalCode === null) {
        // SIGTERM to the container's PID 1, as the kubelet sends it.
        process.kill(pid(), 'SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      return exited;
    };
    const hasExited = () => child.exitCode !== null || child.signalCode !== null;
    return { output: () => ({ stdout, stderr }), exited, hasExited, pid, stop };
  }

  async close(): Promise<void> {
    if (this.holder.exitCode === null && this.holder.signalCode === null) {
      const gone = new Promise((r) => this.holder.once('exit', r));
      this.holder.kill('SIGKILL');
      await gone;
    }
    const leaked = hostMountsUnder(this.o.dir);
    if (leaked.length > 0) throw new Error(`refusing to delete ${this.o.dir}: mounts leaked into the host namespace: ${leaked.join(', ')}`);
    await rm(this.o.dir, { recursive: true, force: true });
  }

  /** The argv that builds the container's namespaces and root, then becomes the container. */
  private async command(plan: ContainerPlan, image: Image): Promise<string[]> {
    const dir = join(this.o.dir, 'containers', `${plan.name}-${containers++}`);
    const root = join(dir, 'root');
    const layers = join(dir, 'layers');
    const staged = join(dir, 'image');
    await mkdir(root, { recursive: true });
    await mkdir(layers, { recursive: true });
    await mkdir(staged, { recursive: true });
    for (const f of image.fs.files) {
      const p = join(staged, f.path);
      await mkdir(dirname(p), { recursive: true });
      await writeFile(p, f.content, { mode: f.mode });
      await chmod(p, f.mode);
    }
    const pid = this.holder.pid!;
    const script = containerScript({ plan, image, root, layers, staged, hostname: this.o.name, mounts: this.mountLines(plan, root) });
    return ['nsenter', `--mount=/proc/${pid}/ns/mnt`, `--net=/proc/${pid}/ns/net`, '--', 'unshare', '-m', '-p', '-u', '--fork', '--kill-child', '--mount-proc', '--', 'sh', '-c', script];
  }

  private mountLines(plan: ContainerPlan, root: string): string[] {
    const lines: string[] = [];
    for (const m of plan.mounts) {
      const vol = this.volumes.get(m.volume)!;
      const src = m.subPath ? join(vol.path, m.subPath) : vol.path;
      const dst = join(root, m.mountPath);
      let isFile = false;
      try {
        isFile = statSync(src).isFile();
      } catch {
        // The kubelet creates a missing subPath as a directory.
        if (!m.subPath) throw new Error(`volume ${m.volume} has no source at ${src}`);
        lines.push(`mkdir -p ${shq(src)}`);
      }
      lines.push(isFile ? `mkdir -p ${shq(dirname(dst))} && touch ${shq(dst)}` : `mkdir -p ${shq(dst)}`);
      lines.push(`mount --bind ${shq(src)} ${shq(dst)}`);
      if (m.readOnly || vol.alwaysReadOnly) lines.push(`mount -o remount,bind,ro ${shq(dst)}`);
    }
    return lines;
  }
}

async function hostPathVolume(nodeRoot: string, v: Volume): Promise<string> {
  const hp = v.hostPath!;
  const p = join(nodeRoot, hp.path);
  if (hp.type === 'DirectoryOrCreate') {
    // The kubelet creates it 0755, owned by root.
    await mkdir(p, { recursive: true, mode: 0o755 });
  } else if (hp.type === 'Directory' || hp.type === undefined || hp.type === '') {
    if (!statSync(p, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`hostPath ${hp.path} does not exist on the node`);
  } else {
    throw new Error(`hostPath type ${hp.type} is not modelled`);
  }
  return p;
}

/** ConfigMap / Secret volume files: the listed items (or every key) with defaultMode, group fsGroup. */
async function writeObjectVolume(dir: string, v: Volume, objects: K8sObject[], fsGroup: number | undefined): Promise<void> {
  const kind = v.configMap ? 'ConfigMap' : 'Secret';
  const name = v.configMap?.name ?? v.secret!.secretName;
  const obj = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!obj) throw new Error(`volume ${v.name}: the release renders no ${kind} ${name}`);
  const raw = (obj.data ?? {}) as Record<string, string>;
  const data = kind === 'Secret' ? Object.fromEntries(Object.entries(raw).map(([k, x]) => [k, Buffer.from(x, 'base64')])) : raw;
  const src = (v.configMap ?? v.secret) as { items?: { key: string; path: string }[]; defaultMode?: number };
  const items = src.items ?? Object.keys(data).map((key) => ({ key, path: key }));
  const mode = src.defaultMode ?? 0o644;
  await mkdir(dir, { recursive: true });
  for (const it of items) {
    if (!(it.key in data)) throw new Error(`volume ${v.name}: ${kind} ${name} has no key ${it.key}`);
    const p = join(dir, it.path);
    await mkdir(dirname(p), { recursive: true });
    await writeFile(p, data[it.key]!);
    await chmod(p, mode);
    if (fsGroup !== undefined) await chown(p, 0, fsGroup);
  }
}

interface ScriptInput {
  plan: ContainerPlan;
  image: Image;
  root: string;
  layers: string;
  staged: string;
  hostname: string;
  mounts: string[];
}

/** Top-level entries of / that are symlinks into /usr on merged-/usr systems (bin, lib, ...). */
function rootSymlinks(): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const e of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
    try {
      if (lstatSync(`/${e}`).isSymbolicLink()) out.push([e, readlinkSync(`/${e}`)]);
    } catch {
      /* not on this system */
    }
  }
  return out;
}

/** The shell script run as root in the container's fresh namespaces; its last step execs the container. */
export function containerScript(s: ScriptInput): string {
  const { plan, image, root: R, layers: L } = s;
  const lines = [
    'set -eu',
    `mount -t tmpfs -o mode=0755 layers ${shq(L)}`,
    `mount -t tmpfs -o mode=0755 rootfs ${shq(R)}`,
  ];
  for (const d of ['usr', 'etc']) {
    lines.push(`mkdir -p ${shq(`${L}/${d}.up`)} ${shq(`${L}/${d}.work`)} ${shq(`${R}/${d}`)}`);
    lines.push(`mount -t overlay overlay -o ${shq(`lowerdir=/${d},upperdir=${L}/${d}.up,workdir=${L}/${d}.work`)} ${shq(`${R}/${d}`)}`);
  }
  for (const [name, target] of rootSymlinks()) lines.push(`ln -s ${shq(target)} ${shq(`${R}/${name}`)}`);
  lines.push(
    `mkdir -p ${['dev', 'proc', 'tmp', 'var/tmp', 'root', 'run'].map((d) => shq(`${R}/${d}`)).join(' ')}`,
    `chmod 1777 ${shq(`${R}/tmp`)} ${shq(`${R}/var/tmp`)}`,
    `chmod 0700 ${shq(`${R}/root`)}`,
    `mount -t tmpfs -o mode=0755,nosuid dev ${shq(`${R}/dev`)}`,
  );
  for (const d of ['null', 'zero', 'full', 'random', 'urandom', 'tty']) {
    lines.push(`touch ${shq(`${R}/dev/${d}`)} && mount --bind /dev/${d} ${shq(`${R}/dev/${d}`)}`);
  }
  lines.push(
    `ln -s /proc/self/fd ${shq(`${R}/dev/fd`)}`,
    `mkdir ${shq(`${R}/dev/shm`)} && mount -t tmpfs -o mode=1777,nosuid,nodev,size=67108864 shm ${shq(`${R}/dev/shm`)}`,
    `mount -t proc proc ${shq(`${R}/proc`)}`,
    // The image's own files (its layer), then the host build it carries, read-only.
    `cp -a ${shq(`${s.staged}/.`)} ${shq(`${R}/`)}`,
  );
  for (const b of image.fs.binds) {
    const dst = `${R}${b.dst}`;
    const isFile = statSync(b.src).isFile();
    lines.push(isFile ? `mkdir -p ${shq(dirname(dst))} && touch ${shq(dst)}` : `mkdir -p ${shq(dst)}`);
    lines.push(`mount --bind ${shq(b.src)} ${shq(dst)}`, `mount -o remount,bind,ro ${shq(dst)}`);
  }
  lines.push(...s.mounts, `hostname ${shq(s.hostname)}`);
  if (plan.readOnlyRootFilesystem) {
    for (const d of ['', '/usr', '/etc']) lines.push(`mount -o remount,ro ${shq(`${R}${d}`)}`);
  }
  const caps = ['-all', ...plan.capabilities.map((c) => `+${c}`)].join(',');
  const priv = [
    '/usr/bin/setpriv',
    `--reuid=${plan.uid}`,
    `--regid=${plan.gid}`,
    plan.groups.length > 0 ? `--groups=${plan.groups.join(',')}` : '--clear-groups',
    `--bounding-set=${caps}`,
    `--inh-caps=-all`,
    ...(plan.noNewPrivs ? ['--no-new-privs'] : []),
    '--',
    '/usr/bin/env',
    '-i',
    '-C',
    plan.workdir,
    ...plan.env.map(([k, v]) => `${k}=${v}`),
    ...plan.argv,
  ];
  lines.push(`exec chroot ${shq(R)} ${priv.map(shq).join(' ')}`);
  return lines.join('\n');
}
