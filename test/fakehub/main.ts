/**
 * Standalone fake hub:
 *   npm run fake-hub -- --root DIR [--port N] [--cdn-port M] [--host 127.0.0.1] [--cdn-host 127.0.0.2]
 *                       [--tree-page-size N] [--rate BYTES_PER_S] [--gated ORG/NAME=TOKEN ...]
 *   npm run fake-hub -- --make-demo DIR
 * Every DIR/<org>/<name>/ is served as a repo over both protocols. The first two stdout lines are
 * `HF_ENDPOINT=...` and `MODELSCOPE_ENDPOINT=...`, printed once everything is hashed and ready.
 */
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { writeDemo } from './demo.js';
import { startFakeHub } from './server.js';

const USAGE = `usage: fake-hub --root DIR [--port N] [--cdn-port M] [--host H] [--cdn-host H2] [--tree-page-size N] [--rate B/s] [--gated ORG/NAME=TOKEN]...
       fake-hub --make-demo DIR`;

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      root: { type: 'string' },
      port: { type: 'string' },
      'cdn-port': { type: 'string' },
      host: { type: 'string' },
      'cdn-host': { type: 'string' },
      'tree-page-size': { type: 'string' },
      rate: { type: 'string' },
      gated: { type: 'string', multiple: true },
      'make-demo': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (values['make-demo'] !== undefined) {
    const dir = await writeDemo(resolve(values['make-demo']));
    console.log(`wrote demo repo ${dir}`);
    return;
  }
  if (values.root === undefined) throw new Error(`--root is required\n${USAGE}`);
  const root = resolve(values.root);
  const gated = new Map<string, string>();
  for (const g of values.gated ?? []) {
    const eq = g.indexOf('=');
    if (eq <= 0) throw new Error(`--gated expects ORG/NAME=TOKEN, got ${JSON.stringify(g)}`);
    gated.set(g.slice(0, eq), g.slice(eq + 1));
  }

  const opts: Parameters<typeof startFakeHub>[0] = {};
  if (values.host !== undefined) opts.host = values.host;
  if (values['cdn-host'] !== undefined) opts.cdnHost = values['cdn-host'];
  const port = int('port', values.port);
  const cdnPort = int('cdn-port', values['cdn-port']);
  const pageSize = int('tree-page-size', values['tree-page-size']);
  const rate = int('rate', values.rate);
  if (port !== undefined) opts.port = port;
  if (cdnPort !== undefined) opts.cdnPort = cdnPort;
  if (pageSize !== undefined) opts.treePageSize = pageSize;
  if (rate !== undefined && rate > 0) opts.perConnectionRate = rate;
  const hub = await startFakeHub(opts);

  const repos: string[] = [];
  for (const org of await readdir(root, { withFileTypes: true })) {
    if (!org.isDirectory() || org.name.startsWith('.')) continue;
    for (const name of await readdir(join(root, org.name), { withFileTypes: true })) {
      if (!name.isDirectory() || name.name.startsWith('.')) continue;
      const id = `${org.name}/${name.name}`;
      const token = gated.get(id);
      const added = await hub.addRepoFromDir(id, join(root, org.name, name.name), token ? { gated: { token } } : {});
      repos.push(id);
      process.stderr.write(`fake-hub: ${id} @ ${added.commit} (${added.files.length} files${token ? ', gated' : ''})\n`);
    }
  }
  if (repos.length === 0) process.stderr.write(`fake-hub: warning: no <org>/<name>/ directories under ${root}\n`);

  process.stdout.write(`HF_ENDPOINT=${hub.hfEndpoint}\nMODELSCOPE_ENDPOINT=${hub.msEndpoint}\n`);
  process.stderr.write(`fake-hub: CDN at ${hub.cdnOrigin}; serving ${repos.length} repo(s); Ctrl-C to stop\n`);

  const stop = (): void => {
    void hub.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`fake-hub: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(2);
});
