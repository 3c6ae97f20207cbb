/**
 * Signed bundles: keys made by the real openssl, bundles made and checked by the real CLI, and the
 * daemon's imports folder with a real watcher. Signed, unsigned, wrongly signed, and tampered.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTrustedKey } from '../../src/bundle/index.js';
import { parseConfig } from '../../src/daemon/config.js';
import { startImportsWatcher } from '../../src/daemon/imports.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { run, runCli, tmpDir } from '../support/index.js';
import { toolMissing } from '../support/tools.js';
import { assertNothingPublished, buildTar, hubEnv, listTree, pattern, readTar, sha, storeArgs } from '../bundle/helpers.js';

const OPENSSL_MISSING = toolMissing('openssl', 'to make Ed25519 keys as operators do', ['version']);

let hub: FakeHub;
let work: string;
const keys = { key: '', pub: '', otherKey: '', otherPub: '', rsaKey: '', encKey: '' };
const bundles = { signed: '', unsigned: '', foreign: '', tamperedSig: '', tamperedManifest: '', sigLast: '' };
let keyId = '';
const big = pattern(1024 * 1024 + 5, 11);

async function openssl(args: string[]): Promise<string> {
  const r = await run('openssl', args);
  if (r.code !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Replace `from` by `to` (same length) inside the first entry named `entry` of a tar, in place. */
function patchEntry(tarBytes: Buffer, needle: string, edit: (s: string) => string): Buffer {
  const out = Buffer.from(tarBytes);
  const at = out.indexOf(needle);
  if (at < 0) throw new Error(`${needle} not in the tar`);
  const replaced = Buffer.from(edit(needle));
  expect(replaced.length).toBe(needle.length);
  replaced.copy(out, at);
  return out;
}

beforeAll(async () => {
  if (OPENSSL_MISSING) return;
  hub = await startFakeHub();
  await hub.addRepo({ id: 'demo/signed', files: { 'config.json': '{"signed":true}', 'model.safetensors': big } });
  work = await tmpDir('sf-sign-');
  for (const [k, p] of [['key', 'pub'], ['otherKey', 'otherPub']] as const) {
    keys[k] = join(work, `${k}.pem`);
    keys[p] = join(work, `${p}.pem`);
    await openssl(['genpkey', '-algorithm', 'ed25519', '-out', keys[k]]);
    await openssl(['pkey', '-in', keys[k], '-pubout', '-out', keys[p]]);
  }
  keys.encKey = join(work, 'encrypted.pem');
  await openssl(['genpkey', '-algorithm', 'ed25519', '-aes256', '-pass', 'pass:secret', '-out', keys.encKey]);
  keys.rsaKey = join(work, 'rsa.pem');
  await openssl(['genpkey', '-algorithm', 'rsa', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', keys.rsaKey]);
  const der = await run('sh', ['-c', `openssl pkey -pubin -in '${keys.pub}' -outform DER | sha256sum`]);
  keyId = der.stdout.split(' ')[0]!;

  const s = storeArgs(work, 'src');
  expect((await runCli(['pull', 'hf://demo/signed', ...s, '--quiet'], { env: hubEnv(hub) })).code).toBe(0);
  const make = async (name: string, extra: string[]) => {
    const file = join(work, name);
    const r = await runCli(['bundle', 'create', 'hf://demo/signed', '-o', file, ...extra, ...s, '--json'], { env: hubEnv(undefined) });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    return { file, out: JSON.parse(r.stdout) as { signedBy?: string } };
  };
  const signed = await make('signed.tar', ['--sign', keys.key]);
  expect(signed.out.signedBy).toBe(keyId);
  bundles.signed = signed.file;
  bundles.unsigned = (await make('unsigned.tar', [])).file;
  bundles.foreign = (await make('foreign.tar', ['--sign', keys.otherKey])).file;
  const bytes = await fsp.readFile(bundles.signed);
  // One base64 character of the signature changed (same length, still valid base64 of 64 bytes).
  const sigText = (await readTar(bytes)).find((e) => e.name === 'swift-fetch-bundle.sig')!.content.toString();
  const sigValue = (JSON.parse(sigText) as { signature: string }).signature;
  bundles.tamperedSig = join(work, 'tampered-sig.tar');
  await fsp.writeFile(bundles.tamperedSig, patchEntry(bytes, sigValue, (v) => (v[0] === 'A' ? 'B' : 'A') + v.slice(1)));
  // The manifest changed after signing (its "created" time), still valid JSON.
  const created = (JSON.parse((await readTar(bytes))[0]!.content.toString()) as { created: string }).created;
  bundles.tamperedManifest = join(work, 'tampered-manifest.tar');
  await fsp.writeFile(bundles.tamperedManifest, patchEntry(bytes, `"created": "${created}"`, (v) => v.replace(/\d(?=Z")/, (d) => String((Number(d) + 1) % 10))));
  // The signature moved to the end of the archive.
  const entries = await readTar(bytes);
  bundles.sigLast = join(work, 'sig-last.tar');
  await fsp.writeFile(bundles.sigLast, await buildTar([...entries.filter((e) => e.name !== 'swift-fetch-bundle.sig'), entries.find((e) => e.name === 'swift-fetch-bundle.sig')!].map((e) => ({ name: e.name, content: e.content }))));
});
afterAll(async () => hub?.close());

describe.skipIf(OPENSSL_MISSING)('signed bundles (skipped without openssl)', () => {
  it('bundle create --sign puts a signature entry right after the manifest, naming the key by the SHA-256 of its DER public key', async () => {
    const names = (await readTar(await fsp.readFile(bundles.signed))).map((e) => e.name);
    expect(names.slice(0, 2)).toEqual(['swift-fetch-bundle.json', 'swift-fetch-bundle.sig']);
    expect(names.slice(2).every((n) => n.startsWith('blobs/sha256/'))).toBe(true);
    const sig = JSON.parse((await readTar(await fsp.readFile(bundles.signed)))[1]!.content.toString()) as Record<string, string>;
    expect(sig).toMatchObject({ format: 'swift-fetch-bundle-signature', version: 1, algorithm: 'ed25519', keyId });
    expect(loadTrustedKey(keys.pub).keyId).toBe(keyId);
  });

  it('verify and import with --trust accept a bundle signed by a trusted key; the import records who signed it', async () => {
    const v = await runCli(['bundle', 'verify', bundles.signed, '--trust', keys.otherPub, '--trust', keys.pub], { env: hubEnv(undefined) });
    expect(v.stderr).toBe('');
    expect(v.code).toBe(0);
    expect(v.stdout).toContain(`signed by sha256:${keyId.slice(0, 16)} (trusted)`);
    const dir = await tmpDir();
    const s = storeArgs(dir);
    const i = await runCli(['bundle', 'import', bundles.signed, '--trust', keys.pub, ...s, '--json'], { env: hubEnv(undefined) });
    expect(i.stderr).toBe('');
    expect(i.code).toBe(0);
    expect(JSON.parse(i.stdout.trim().split('\n').at(-1)!)).toMatchObject({ type: 'done', signer: { keyId, trusted: true } });
    const inspect = JSON.parse((await runCli(['inspect', 'hf://demo/signed', ...s, '--json'], { env: hubEnv(undefined) })).stdout) as { files: Array<{ from: Record<string, any> }> };
    for (const f of inspect.files) expect(f.from).toMatchObject({ via: 'bundle', hub: 'hf', bundle: { file: bundles.signed, signedBy: keyId } });
  });

  it('without --trust a signed bundle verifies (its signature checked against the key it names), and says the signer was not checked', async () => {
    const v = await runCli(['bundle', 'verify', bundles.signed], { env: hubEnv(undefined) });
    expect(v.code).toBe(0);
    expect(v.stdout).toContain('no --trust given, so the signer was not checked');
    const u = await runCli(['bundle', 'verify', bundles.unsigned], { env: hubEnv(undefined) });
    expect(u.code).toBe(0);
    expect(u.stdout).toContain('not signed');
  });

  it.each([
    ['unsigned', () => bundles.unsigned, /bundle signature refused: the bundle is not signed, and only bundles signed by a trusted key/],
    ['signed by another key', () => bundles.foreign, /bundle signature refused: signed by key sha256:[0-9a-f]{16}, which is not trusted \(trusted: sha256:/],
    ['with a tampered signature', () => bundles.tamperedSig, /bundle signature refused: the signature by sha256:[0-9a-f]{16} does not match the manifest \(tampered\)/],
    ['with a manifest changed after signing', () => bundles.tamperedManifest, /does not match the manifest \(tampered\)/],
  ])('a bundle %s is refused by verify and import --trust with exit 5, nothing published', async (_what, file, message) => {
    const v = await runCli(['bundle', 'verify', file(), '--trust', keys.pub], { env: hubEnv(undefined) });
    expect(v.code).toBe(5);
    expect(v.stderr).toMatch(message);
    const dir = await tmpDir();
    const i = await runCli(['bundle', 'import', file(), '--trust', keys.pub, ...storeArgs(dir)], { env: hubEnv(undefined) });
    expect(i.code).toBe(5);
    expect(i.stderr).toMatch(message);
    expect(i.stderr.trim().split('\n')).toHaveLength(1);
    await assertNothingPublished(join(dir, 'store'));
  });

  it('a broken signature is refused even without --trust; a signature out of place is a malformed bundle (2)', async () => {
    for (const file of [bundles.tamperedSig, bundles.tamperedManifest]) {
      const dir = await tmpDir();
      expect((await runCli(['bundle', 'verify', file], { env: hubEnv(undefined) })).code).toBe(5);
      expect((await runCli(['bundle', 'import', file, ...storeArgs(dir)], { env: hubEnv(undefined) })).code).toBe(5);
      await assertNothingPublished(join(dir, 'store'));
    }
    const r = await runCli(['bundle', 'verify', bundles.sigLast], { env: hubEnv(undefined) });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/a signature must come right after the manifest/);
  });

  it('refuses keys that are not Ed25519, an encrypted key, a private key given as trusted, and a missing key file, with exit 2 before doing anything', async () => {
    const dir = await tmpDir();
    const out = join(dir, 'x.tar');
    const cases: Array<[string[], RegExp]> = [
      [['bundle', 'create', 'hf://demo/signed', '-o', out, '--sign', keys.rsaKey], /--sign .*rsa\.pem: a rsa key; bundles are signed with Ed25519 keys/],
      [['bundle', 'create', 'hf://demo/signed', '-o', out, '--sign', keys.pub], /--sign .*pub\.pem: not a PEM private key/],
      [['bundle', 'create', 'hf://demo/signed', '-o', out, '--sign', keys.encKey], /--sign .*encrypted\.pem: the key is encrypted; give an unencrypted PEM key/],
      [['bundle', 'verify', bundles.signed, '--trust', keys.key], /--trust .*key\.pem: holds a private key; trust the public key instead/],
      [['bundle', 'import', bundles.signed, '--trust', join(dir, 'nope.pem')], /--trust .*nope\.pem: cannot read it \(ENOENT\)/],
    ];
    hub.resetStats();
    for (const [args, message] of cases) {
      const r = await runCli([...args, ...storeArgs(dir)], { env: hubEnv(hub) });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
    }
    expect(hub.log).toEqual([]);
    expect((await listTree(dir)).filter((p) => !p.endsWith('/'))).toEqual([]);
  });
});

describe.skipIf(OPENSSL_MISSING)('the daemon\'s imports folder with trust (skipped without openssl)', () => {
  it('imports only the bundle signed by a trusted key; unsigned, foreign and tampered ones go to failed/ with exit code 5', async () => {
    const dir = await tmpDir();
    const imports = join(dir, 'imports');
    await fsp.mkdir(imports, { recursive: true });
    const drops = { 'good.tar': bundles.signed, 'unsigned.tar': bundles.unsigned, 'foreign.tar': bundles.foreign, 'tampered.tar': bundles.tamperedSig };
    for (const [name, src] of Object.entries(drops)) await fsp.copyFile(src, join(imports, name));
    // The trust list exactly as the daemon reads it from its config.
    const cfg = parseConfig(JSON.stringify({ store: join(dir, 'store'), imports: { dir: imports, trust: [keys.pub] } }), join(dir, 'config.json'), { env: {} });
    expect(cfg.imports).toBe(imports);
    expect(cfg.importsTrust).toEqual([keys.pub]);
    const imported: string[] = [];
    const failed: string[] = [];
    const watcher = await startImportsWatcher({
      dir: cfg.imports!, store: cfg.store, trust: cfg.importsTrust!.map((f) => loadTrustedKey(f, 'imports.trust')),
      logger: pino({ level: 'silent' }), stabilityMs: 300,
      onImported: ({ file }) => imported.push(file),
      onFailed: ({ file }) => failed.push(file),
    });
    try {
      const deadline = Date.now() + 30_000;
      while (imported.length + failed.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      await watcher.idle();
    } finally {
      await watcher.close();
    }
    expect(imported).toEqual([join(imports, 'good.tar')]);
    expect(failed.sort()).toEqual(['foreign.tar', 'tampered.tar', 'unsigned.tar'].map((n) => join(imports, n)));
    for (const n of ['foreign.tar', 'tampered.tar', 'unsigned.tar']) {
      const reason = await fsp.readFile(join(imports, 'failed', `${n}.reason.txt`), 'utf8');
      expect(reason).toMatch(/error: bundle signature refused: /);
      expect(reason).toMatch(/exit code: 5/);
    }
    // Published: the good bundle's model, signed by the trusted key.
    const inspect = await runCli(['inspect', 'hf://demo/signed', '--store', join(dir, 'store'), '--json'], { env: hubEnv(undefined) });
    expect(JSON.parse(inspect.stdout).files[0].from.bundle.signedBy).toBe(keyId);
    expect(sha(await fsp.readFile(join(JSON.parse(inspect.stdout).path, 'model.safetensors')))).toBe(sha(big));
  });

  it('the config takes imports as a folder or as {dir, trust}, and names the keys it knows', () => {
    const base = { env: {} };
    expect(parseConfig('imports: /x\n', '/etc/c.yaml', base)).toMatchObject({ imports: '/x' });
    expect(parseConfig('imports: {dir: drop, trust: [keys/a.pem]}\n', '/etc/c.yaml', base)).toMatchObject({ imports: '/etc/drop', importsTrust: ['/etc/keys/a.pem'] });
    expect(() => parseConfig('imports: {dir: /x, trusted: [a]}\n', '/etc/c.yaml', base)).toThrow('/etc/c.yaml: imports.trusted: unknown key (expected one of: dir, trust)');
    expect(() => parseConfig('imports: {trust: [a]}\n', '/etc/c.yaml', base)).toThrow(/imports\.dir: expected a non-empty string/);
  });
});
