/**
 * A daemon with the hub mirror on, in this process, in front of the fake hub (the upstream), with
 * its own store and state in a temporary folder. Clients under test are the real Python ones.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { parseConfig } from '../../src/daemon/config.js';
import { startDaemon, type Daemon, type DaemonDeps } from '../../src/daemon/index.js';
import type { FakeHub } from '../fakehub/index.js';

export interface MirrorNode {
  daemon: Daemon;
  dir: string;
  hfEndpoint: string;
  msEndpoint: string;
  stop(): Promise<void>;
}

/** Start a daemon (mirror: true unless `yaml` says otherwise) whose upstream is `hub`. */
export async function startMirrorNode(hub: FakeHub, opts: { yaml?: string; env?: Record<string, string>; deps?: DaemonDeps; dir?: string; port?: number } = {}): Promise<MirrorNode> {
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'sf-mirror-')));
  const file = join(dir, 'daemon.yaml');
  await writeFile(file, `listen: 127.0.0.1:${opts.port ?? 0}\nstore: ${join(dir, 'store')}\nstateDir: ${join(dir, 'state')}\n${opts.yaml ?? 'mirror: true\n'}`);
  const cfg = parseConfig(await (await import('node:fs/promises')).readFile(file, 'utf8'), file);
  const env = { ...process.env, HF_ENDPOINT: hub.hfEndpoint, MODELSCOPE_ENDPOINT: hub.msEndpoint, HF_TOKEN: '', MODELSCOPE_API_TOKEN: '', HF_TOKEN_PATH: join(dir, 'no-token'), ...opts.env };
  const daemon = await startDaemon(cfg, { logger: pino({ level: process.env.SF_TEST_LOG ?? 'silent' }), env, resyncMs: 0, ...opts.deps });
  const res = await fetch(`${daemon.url}/v1/mirror`);
  const urls = (res.ok ? await res.json() : { hfEndpoint: '', modelscopeEndpoint: '' }) as { hfEndpoint: string; modelscopeEndpoint: string };
  return {
    daemon,
    dir,
    hfEndpoint: urls.hfEndpoint,
    msEndpoint: urls.modelscopeEndpoint,
    async stop() {
      await daemon.stop();
      if (!opts.dir) await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Body bytes the origin (hub and CDN) sent for one repo file. */
export function originBytes(hub: FakeHub, path: string): number {
  return hub.bytesSent({ path });
}
