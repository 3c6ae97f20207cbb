/**
 * A client that is not on loopback: curl run inside a network namespace the test creates, joined
 * to this one by a veth pair (this side 10.233.N.1, that side 10.233.N.2). Nothing leaves the
 * machine. Needs root, iproute2 and curl; without them `remoteMissing()` says why (the caller
 * skips), and under CI=true it throws, so the tests fail rather than vanish.
 */
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export function remoteMissing(): string | undefined {
  let why: string | undefined;
  if (process.platform !== 'linux') why = 'network namespaces need Linux';
  else if (process.getuid?.() !== 0) why = 'network namespaces need root';
  else {
    try {
      execFileSync('ip', ['-V'], { stdio: 'ignore' });
      execFileSync('curl', ['--version'], { stdio: 'ignore' });
    } catch {
      why = 'iproute2 (ip) and curl are needed';
    }
  }
  if (why && process.env.CI === 'true') throw new Error(`CI: a non-loopback client cannot be made: ${why}`);
  return why;
}

export interface RemoteClient {
  /** This side's address: listen here (or on 0.0.0.0) to be reached by the client. */
  hostIp: string;
  /** The address requests come from. */
  clientIp: string;
  request(method: string, url: string, opts?: { headers?: Record<string, string>; body?: string }): Promise<{ status: number; body: string }>;
  close(): void;
}

let seq = 0;

export function remoteClient(): RemoteClient {
  const tag = ((process.pid * 7 + seq++) % 40000) + 10000;
  const net = `10.233.${tag % 250}`;
  const ns = `sfa${tag}`;
  const hostIf = `sfah${tag}`;
  const nsIf = `sfan${tag}`;
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
  const close = () => {
    for (const args of [['netns', 'del', ns], ['link', 'del', hostIf]]) {
      try {
        ip(...args);
      } catch {
        /* already gone (the veth goes with its namespace) */
      }
    }
  };
  try {
    ip('netns', 'add', ns);
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
    ip('link', 'set', nsIf, 'netns', ns);
    ip('addr', 'add', `${net}.1/30`, 'dev', hostIf);
    ip('link', 'set', hostIf, 'up');
    ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${net}.2/30`, 'dev', nsIf);
    ip('netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up');
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  } catch (e) {
    close();
    throw e;
  }
  return {
    hostIp: `${net}.1`,
    clientIp: `${net}.2`,
    async request(method, url, opts = {}) {
      const args = ['netns', 'exec', ns, 'curl', '-sS', '--noproxy', '*', '--max-time', '10', '-X', method, '-w', '\n%{http_code}'];
      for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}: ${v}`);
      if (opts.body !== undefined) args.push('--data-binary', opts.body);
      args.push(url);
      const { stdout } = await run('ip', args);
      const lines = stdout.split('\n');
      const status = Number(lines.pop());
      return { status, body: lines.join('\n') };
    },
    close,
  };
}
