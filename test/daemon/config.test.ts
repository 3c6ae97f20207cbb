import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultStateDir, defaultStoreDir, loadConfig, parseConfig, parseModelsFile } from '../../src/daemon/config.js';
import { tempDir } from './helpers.js';

const env = { HOME: '/home/u' } as NodeJS.ProcessEnv;

/** The document the Helm chart renders (keys camelCase). */
const CHART = `
store: /var/lib/swift-fetch/store
stateDir: /var/lib/swift-fetch/state
listen: 0.0.0.0:7070
models: [ "hf://Qwen/Qwen2.5-0.5B-Instruct", {ref: "ms://Qwen/Qwen2.5-7B-Instruct", include: ["*.json","*.safetensors"], exclude: []} ]
modelsFile: /etc/swift-fetch/models/models.yaml
maxRate: 200MB/s
connections: 16
chunkSize: 16MiB
peers: { static: [], dns: "svc.ns.svc.cluster.local", port: 7070, tokenFile: /etc/swift-fetch/peer-token/token, uploadMaxRate: 100MB/s, uploadConcurrency: 4 }
gc: { maxBytes: 500GiB }
imports: /var/lib/swift-fetch/imports
logLevel: info
`;

function err(text: string, source = 'config.yaml'): { message: string; exitCode: number } {
  try {
    parseConfig(text, source, { env });
  } catch (e) {
    return e as { message: string; exitCode: number };
  }
  throw new Error('expected a config error');
}

describe('daemon config', () => {
  it('parses the document the Helm chart renders', () => {
    const c = parseConfig(CHART, '/etc/swift-fetch/config.yaml', { env });
    expect(c).toMatchObject({
      store: '/var/lib/swift-fetch/store',
      stateDir: '/var/lib/swift-fetch/state',
      listen: { host: '0.0.0.0', port: 7070 },
      modelsFile: '/etc/swift-fetch/models/models.yaml',
      maxRate: 200_000_000,
      connections: 16,
      chunkSize: 16 * 1024 * 1024,
      peers: { static: [], dns: 'svc.ns.svc.cluster.local', port: 7070, tokenFile: '/etc/swift-fetch/peer-token/token', uploadMaxRate: 100_000_000, uploadConcurrency: 4 },
      gc: { maxBytes: 500 * 1024 ** 3 },
      imports: '/var/lib/swift-fetch/imports',
      logLevel: 'info',
    });
    expect(c.models.map((m) => m.key)).toEqual(['hf://Qwen/Qwen2.5-0.5B-Instruct@main', 'ms://Qwen/Qwen2.5-7B-Instruct@master']);
    expect(c.models[1]).toMatchObject({ include: ['*.json', '*.safetensors'], exclude: [] });
  });

  it('reads the same config as JSON', () => {
    const c = parseConfig(JSON.stringify({ listen: ':9000', models: ['Qwen/X'], gc: { maxBytes: 1000 } }), 'c.json', { env: { ...env, USE_HF: '1' } });
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(c.models[0]!.key).toBe('hf://Qwen/X@main'); // USE_HF makes a bare ref Hugging Face
    expect(c.gc.maxBytes).toBe(1000);
  });

  it('has laptop defaults, shared with the CLI', () => {
    const c = parseConfig('', 'config.yaml', { env });
    expect(c.store).toBe('/home/u/.cache/swift-fetch/store');
    expect(c.stateDir).toBe('/home/u/.local/state/swift-fetch');
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 7070 });
    expect(c.maxRate).toBe(0);
    expect(c.models).toEqual([]);
    expect(c.gc.maxBytes).toBe(0);
    expect(defaultStoreDir({ ...env, SWIFT_FETCH_STORE: '/s' })).toBe('/s');
    expect(parseConfig('', 'c.yaml', { env: { ...env, SWIFT_FETCH_STORE: '/s' } }).store).toBe('/s');
    expect(defaultStateDir(env)).toBe(c.stateDir);
  });

  it('resolves relative paths against the config file and expands ~', () => {
    const c = parseConfig('store: data/store\nstateDir: ~/state\nmodelsFile: models.yaml', '/etc/sf/config.yaml', { env });
    expect(c.store).toBe('/etc/sf/data/store');
    expect(c.stateDir).toBe('/home/u/state');
    expect(c.modelsFile).toBe('/etc/sf/models.yaml');
  });

  it('names the key and the expected form in every error (exit code 2)', () => {
    const cases: Array<[string, string]> = [
      ['peers: { port: abc }', 'config.yaml: peers.port: expected an integer 1-65535, got "abc"'],
      ['peers: { port: 70000 }', 'config.yaml: peers.port: expected an integer 1-65535, got 70000'],
      ['peers: { prot: 1 }', 'config.yaml: peers.prot: unknown key'],
      ['stroe: /x', 'config.yaml: stroe: unknown key'],
      ['maxRate: fast', 'config.yaml: maxRate: expected a rate such as 200MB/s'],
      // A fraction of a byte per second would round to 0, which means unlimited.
      ['maxRate: 0.5', 'config.yaml: maxRate: rate 0.5 is below 1 B/s'],
      ['peers: { uploadMaxRate: 1e308 }', 'config.yaml: peers.uploadMaxRate: rate 1e+308 is above'],
      ['chunkSize: 12 parsecs', 'config.yaml: chunkSize: expected a size such as 16MiB'],
      ['gc: { maxBytes: lots }', 'config.yaml: gc.maxBytes: expected a size'],
      ['listen: localhost', 'config.yaml: listen: expected host:port'],
      ['connections: 0', 'config.yaml: connections: expected an integer 1-256, got 0'],
      ['logLevel: loud', 'config.yaml: logLevel: expected one of fatal, error, warn, info, debug, trace, silent, got "loud"'],
      ['models: ["hf://a/b", "ftp://x/y"]', 'config.yaml: models[1]: invalid model reference "ftp://x/y": unknown scheme'],
      ['models: [{ref: "hf://a/b", include: "*.json"}]', 'config.yaml: models[0].include: expected a list of glob patterns'],
      ['models: [{ref: "hf://a/b", inclde: []}]', 'config.yaml: models[0].inclde: unknown key'],
      ['models: [{include: []}]', 'config.yaml: models[0].ref: expected a model reference'],
      ['peers: 5', 'config.yaml: peers: expected an object'],
      ['peers: { static: ["not a url"] }', 'config.yaml: peers.static[0]: expected an http(s) base URL'],
      ['models: [a/b', 'config.yaml: not valid YAML: line'],
      ['store: a\nstore: b', 'config.yaml: not valid YAML: line 2'],
    ];
    for (const [text, want] of cases) {
      const e = err(text);
      expect(e.exitCode, text).toBe(2);
      expect(e.message, text).toContain(want);
    }
    expect(err('{"listen": 1,}', 'c.json').message).toMatch(/^c\.json: not valid JSON/);
    // The keys an unknown-key message offers are the ones the parser accepts, at that level.
    expect(err('stroe: /x').message).toContain('(expected one of: store, stateDir, listen, models, modelsFile, maxRate, connections, chunkSize, maxConcurrentPulls, peers, gc, imports, lockFile, locked, mirror, logLevel, kubernetes, replicas, backup, api, tls)');
    expect(err('gc: { every: 1h }').message).toContain('gc.every: unknown key (expected one of: maxBytes, interval)');
    expect(err('models: [{ref: "hf://a/b", inclde: []}]').message).toContain('(expected one of: ref, include, exclude)');
  });

  it('reads the api and tls sections, with defaults that bound on-demand work', () => {
    const c = parseConfig(
      'api: { tokenFile: secrets/api, protectReads: true, maxRequested: 8, forgetFailedAfter: 2m, requestsPerMinute: 0 }\n' +
        'tls: { certFile: tls/tls.crt, keyFile: tls/tls.key }\npeers: { caFile: tls/ca.crt, serverName: peers.ns.svc.cluster.local }\n',
      '/etc/sf/config.yaml',
      { env },
    );
    expect(c.api).toEqual({ tokenFile: '/etc/sf/secrets/api', protectReads: true, maxRequested: 8, forgetFailedAfterMs: 120_000, requestsPerMinute: 0 });
    expect(c.tls).toEqual({ certFile: '/etc/sf/tls/tls.crt', keyFile: '/etc/sf/tls/tls.key' });
    expect(c.peers).toMatchObject({ caFile: '/etc/sf/tls/ca.crt', serverName: 'peers.ns.svc.cluster.local' });
    const d = parseConfig('', 'config.yaml', { env });
    expect(d.api).toEqual({ protectReads: false, maxRequested: 64, forgetFailedAfterMs: 15 * 60_000, requestsPerMinute: 60 });
    expect(d.tls).toBeUndefined();
    expect(err('tls: { certFile: /c }').message).toContain('config.yaml: tls.keyFile: expected a non-empty string, got nothing');
    expect(err('api: { maxRequested: 0 }').message).toContain('config.yaml: api.maxRequested: expected an integer 1-100000, got 0');
    expect(err('api: { token: x }').message).toContain('api.token: unknown key (expected one of: tokenFile, protectReads, maxRequested, forgetFailedAfter, requestsPerMinute)');
  });

  it('loadConfig reports a missing file as a usage error', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await expect(loadConfig(join(dir, 'nope.yaml'))).rejects.toMatchObject({ exitCode: 2, message: expect.stringContaining('ENOENT') });
      await writeFile(join(dir, 'c.yaml'), 'listen: 127.0.0.1:0\n');
      expect((await loadConfig(join(dir, 'c.yaml'))).listen).toEqual({ host: '127.0.0.1', port: 0 });
    } finally {
      await cleanup();
    }
  });

  it('parses models files as a list or under `models`, and dedupes by canonical ref', () => {
    expect(parseModelsFile('- hf://a/b\n- {ref: "hf://a/b@main"}\n- ms://c/d@v1\n', 'm.yaml', env).map((m) => m.key)).toEqual(['hf://a/b@main', 'ms://c/d@v1']);
    expect(parseModelsFile('models:\n  - hf://a/b\n', 'm.yaml', env)).toHaveLength(1);
    expect(parseModelsFile('', 'm.yaml', env)).toEqual([]);
    expect(() => parseModelsFile('- hf://a\n', 'm.yaml', env)).toThrow(/m\.yaml: \[0\]: invalid model reference/);
    expect(() => parseModelsFile('models: [3]', 'm.yaml', env)).toThrow(/m\.yaml: models\[0\]: expected a model reference/);
  });
});
