/**
 * The two container images of the chart, as the topology test stands them up without a registry:
 *
 * - the swift-fetch image, read from this repository's Dockerfile (runtime stage: ENTRYPOINT, CMD,
 *   WORKDIR, ENV, USER, the COPY layout under /app and the `swift-fetch` shim on PATH), filled with
 *   this checkout's build (bin/, dist/, node_modules, package.json) instead of a built image;
 * - a stand-in for the ms-swift image: the repository's Python venv with the real huggingface_hub
 *   and modelscope clients, and a `swift` command (fixtures/swift.py) that checks what the pod was
 *   handed instead of serving a model.
 *
 * Both share the machine's /usr and /etc as lower layers (overlaid, so nothing is written to the
 * host); see sandbox.ts for how a container's root is assembled.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { repoRoot } from '../support/index.js';
import type { ImageConfig } from './kubelet.js';

export interface ImageFs {
  /** Host paths bind-mounted read-only into the image at `dst`. */
  binds: Array<{ src: string; dst: string }>;
  /** Files the image adds (its own layer). */
  files: Array<{ path: string; content: string; mode: number }>;
}

export interface Image {
  name: string;
  config: ImageConfig;
  fs: ImageFs;
}

/** PATH of the official Node images (and of most Debian-based images). */
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function runtimeStage(): Instruction[] {
  const df = DockerfileParser.parse(readFileSync(join(repoRoot, 'Dockerfile'), 'utf8'));
  const last = df.getFROMs().at(-1)!;
  const start = last.getRange().start.line;
  return df.getInstructions().filter((i) => i.getRange().start.line >= start);
}

function jsonArgs(ins: Instruction): string[] {
  const strings = (ins as unknown as { getJSONStrings?: () => Array<{ getJSONValue(): string }> }).getJSONStrings?.() ?? [];
  if (strings.length === 0) throw new Error(`Dockerfile ${ins.getKeyword()} must be in exec (JSON) form for the topology test`);
  return strings.map((s) => s.getJSONValue());
}

/** The swift-fetch image as the Dockerfile's runtime stage describes it, with this checkout's build in it. */
export function swiftFetchImage(): Image {
  const stage = runtimeStage();
  const kw = (k: string) => stage.filter((i) => i.getKeyword().toUpperCase() === k);
  const text = (i: Instruction) => i.getRawArgumentsContent() ?? '';
  const workdir = kw('WORKDIR').at(-1)?.getArgumentsContent() ?? '/';
  const env: Array<[string, string]> = [['PATH', DEFAULT_PATH]];
  for (const e of kw('ENV')) {
    for (const p of (e as unknown as { getProperties(): Array<{ getName(): string; getValue(): string | null }> }).getProperties()) {
      env.push([p.getName(), p.getValue() ?? '']);
    }
  }
  const user = /^(\d+)(?::(\d+))?$/.exec(text(kw('USER').at(-1)!).trim());
  if (!user) throw new Error('the Dockerfile runtime stage must set a numeric USER');
  const runs = kw('RUN').map(text).join('\n');
  const home = /--home-dir\s+(\S+)/.exec(runs)?.[1] ?? '/';
  // The `swift-fetch` command on PATH: `exec /usr/bin/tini -s -- node /app/bin/... "$@"` written to
  // /usr/local/bin/swift-fetch. tini is not on this machine; node runs as PID 1 of the container.
  const shim = /exec \/usr\/bin\/tini -s -- (node \S+) "\$@"/.exec(runs);
  const shimPath = /> (\/usr\/local\/bin\/[\w-]+)/.exec(runs);
  if (!shim || !shimPath) throw new Error('the Dockerfile no longer writes the swift-fetch shim the topology test expects');
  const binds: ImageFs['binds'] = [];
  for (const c of kw('COPY')) {
    const parts = text(c).split(/\s+/).filter((x) => !x.startsWith('--'));
    const rawDst = parts.at(-1)!;
    const dst = posix.resolve(workdir, rawDst);
    const intoDir = rawDst.endsWith('/') || parts.length > 2;
    for (const src of parts.slice(0, -1)) {
      // `COPY --from=build /app/dist ./dist` holds what `npm run build` left in dist/ here.
      const local = join(repoRoot, basename(src));
      if (!existsSync(local)) throw new Error(`the image needs ${local} (run npm run build)`);
      binds.push({ src: local, dst: intoDir ? posix.join(dst, basename(src)) : dst });
    }
  }
  return {
    name: 'swift-fetch',
    config: {
      entrypoint: jsonArgs(kw('ENTRYPOINT').at(-1)!),
      cmd: kw('CMD').length > 0 ? jsonArgs(kw('CMD').at(-1)!) : [],
      env,
      user: { uid: Number(user[1]), ...(user[2] ? { gid: Number(user[2]) } : {}) },
      workdir,
      home,
    },
    fs: { binds, files: [{ path: shimPath[1]!, content: `#!/bin/sh\nexec ${shim[1]} "$@"\n`, mode: 0o755 }] },
  };
}

/** Where the venv sits in the ms-swift stand-in. */
export const VENV_IN_IMAGE = '/opt/venv';

/**
 * The ms-swift stand-in: root user, the venv at /opt/venv (its interpreter's prefix mounted at
 * the path the venv names), and `swift` on PATH running fixtures/swift.py with `expect` as its
 * expectations file. `driverVersions` puts an `nvidia-smi` at /usr/bin, where the NVIDIA container
 * toolkit mounts it, answering the driver-version query with one line per GPU.
 */
export function msSwiftStandIn(expect: unknown, driverVersions?: string[]): Image {
  const venv = realpathSync(join(repoRoot, '.venv'));
  const cfg = readFileSync(join(venv, 'pyvenv.cfg'), 'utf8');
  const home = /^home\s*=\s*(.+)$/m.exec(cfg)?.[1]?.trim();
  if (!home) throw new Error(`${venv}/pyvenv.cfg names no home interpreter`);
  const prefix = dirname(realpathSync(home));
  const stub = readFileSync(join(repoRoot, 'test/topology/fixtures/swift.py'), 'utf8').replace(/^#!.*\n/, '');
  return {
    name: 'ms-swift (stand-in)',
    config: {
      entrypoint: [],
      cmd: ['sh'],
      env: [
        ['PATH', `${VENV_IN_IMAGE}/bin:${DEFAULT_PATH}`],
        ['PYTHONDONTWRITEBYTECODE', '1'],
        ['HF_HUB_DISABLE_TELEMETRY', '1'],
      ],
      workdir: '/',
      home: '/root',
    },
    fs: {
      binds: [
        { src: venv, dst: VENV_IN_IMAGE },
        { src: prefix, dst: prefix },
      ],
      files: [
        { path: '/usr/local/bin/swift', content: `#!${VENV_IN_IMAGE}/bin/python\n${stub}`, mode: 0o755 },
        { path: '/opt/swift-stand-in/expect.json', content: JSON.stringify(expect), mode: 0o644 },
        ...(driverVersions
          ? [{
              path: '/usr/bin/nvidia-smi',
              content: `#!/bin/sh\n[ "$*" = "--query-gpu=driver_version --format=csv,noheader" ] || exit 2\nprintf '%s\\n' ${driverVersions.join(' ')}\n`,
              mode: 0o755,
            }]
          : []),
      ],
    },
  };
}
