/**
 * TLS for the listener (issue 12, "Also: TLS"): certificates made by openssl in the test, a real
 * daemon serving HTTPS, a cert-manager style rotation (kubelet `..data` swap) picked up without a
 * restart, and peers checked against peers.caFile: one with a certificate from another CA is
 * refused before it is sent anything, so it never sees the peer token.
 */
import { copyFile, mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Agent, request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DaemonClient } from '../../src/daemon/client.js';
import { parseConfig } from '../../src/daemon/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { makeCa, makeCert, OPENSSL_MISSING, type Pem } from './certs.js';
import { fakePull } from './fake-pull.js';
import { parsePrometheus, tempDir, until } from './helpers.js';

const NAME = 'peers.test';
const PEER_TOKEN = 'peer-token-tls-7Hq2';

let dir: string;
let cleanup: () => Promise<void>;
const daemons: Daemon[] = [];
const servers: Server[] = [];
let logText = '';

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('sf-tls-'));
  logText = '';
});
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop()));
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
  await cleanup();
});

/** A TLS Secret volume as the kubelet writes it (`tls.crt`, `tls.key` through `..data`); `rotate` swaps in a new pair. */
async function tlsVolume(pair: Pem): Promise<{ certFile: string; keyFile: string; rotate: (p: Pem) => Promise<void> }> {
  const vol = join(dir, 'tls');
  let n = 0;
  const version = async (p: Pem) => {
    const ts = `..2024_01_01_00_00_0${n++}.000`;
    await mkdir(join(vol, ts), { recursive: true });
    await copyFile(p.cert, join(vol, ts, 'tls.crt'));
    await copyFile(p.key, join(vol, ts, 'tls.key'));
    return ts;
  };
  await mkdir(vol, { recursive: true });
  await symlink(await version(pair), join(vol, '..data'));
  for (const f of ['tls.crt', 'tls.key']) await symlink(`..data/${f}`, join(vol, f));
  return {
    certFile: join(vol, 'tls.crt'),
    keyFile: join(vol, 'tls.key'),
    rotate: async (p) => {
      const ts = await version(p);
      await symlink(ts, join(vol, '..data_tmp'));
      await rename(join(vol, '..data_tmp'), join(vol, '..data'));
    },
  };
}

async function start(config: string): Promise<Daemon> {
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logText += String(chunk);
      cb();
    },
  });
  const cfg = parseConfig(`store: ${join(dir, `store${daemons.length}`)}\nstateDir: ${join(dir, `state${daemons.length}`)}\n${config}`, join(dir, 'config.yaml'));
  const d = await startDaemon(cfg, {
    pull: fakePull().pull,
    logger: pino({ level: 'info' }, sink),
    resyncMs: 0,
    storeSyncMs: 0,
    p2p: { discoveryIntervalMs: 300 },
  });
  daemons.push(d);
  return d;
}

/** The serial number of the certificate served at `port` (checked against `ca` and NAME). */
function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca, servername: NAME }, () => {
      const serial = s.getPeerCertificate().serialNumber;
      s.destroy();
      resolve(serial);
    });
    s.once('error', reject);
  });
}

describe.skipIf(OPENSSL_MISSING)('daemon over TLS (skipped without openssl)', () => {
  it('serves the API over HTTPS: clients that trust the CA get answers, plain HTTP and untrusting clients do not', async () => {
    const ca = makeCa(join(dir, 'pki'), 'ca');
    // Named, not addressed: reached by IP, a client must check the name instead (as init and peers do).
    const leaf = makeCert(join(dir, 'pki'), ca, 'daemon', { dns: [NAME] });
    const vol = await tlsVolume(leaf);
    const d = await start(`listen: 127.0.0.1:0\ntls: { certFile: ${vol.certFile}, keyFile: ${vol.keyFile} }\n`);
    expect(d.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const caPem = await readFile(ca.cert, 'utf8');
    const trusting = new Agent({ connect: { ca: caPem, servername: NAME } });
    try {
      const r = await request(`${d.url}/healthz`, { dispatcher: trusting });
      expect([r.statusCode, await r.body.text()]).toEqual([200, 'ok\n']);
    } finally {
      await trusting.close();
    }
    // The daemon client (what init uses), reaching it by IP and checking the name instead.
    const client = new DaemonClient(d.url, { trust: { ca: caPem, serverName: NAME } });
    const noName = new DaemonClient(d.url, { trust: { ca: caPem } });
    const untrusting = new DaemonClient(d.url);
    try {
      expect(await client.notReady()).toBeUndefined();
      await expect(noName.notReady()).rejects.toMatchObject({ exitCode: 4, code: 'ESF_DAEMON_TLS', message: expect.stringMatching(/ERR_TLS_CERT_ALTNAME_INVALID.*--daemon-server-name/) });
      await expect(untrusting.notReady()).rejects.toMatchObject({ exitCode: 4, code: 'ESF_DAEMON_TLS', message: expect.stringMatching(/does not trust \(.*(CERT|VERIFY).*\).*--daemon-ca-file/) });
    } finally {
      await Promise.all([client.close(), noName.close(), untrusting.close()]);
    }
    await expect(fetch(d.url.replace('https:', 'http:') + '/healthz')).rejects.toThrow();
  });

  it('serves a rotated certificate without a restart, and keeps the last good one when a rotation does not load', async () => {
    const ca = makeCa(join(dir, 'pki'), 'ca');
    const first = makeCert(join(dir, 'pki'), ca, 'first', { dns: [NAME] });
    const vol = await tlsVolume(first);
    const d = await start(`listen: 127.0.0.1:0\ntls: { certFile: ${vol.certFile}, keyFile: ${vol.keyFile} }\n`);
    const port = Number(new URL(d.url).port);
    const caPem = await readFile(ca.cert, 'utf8');
    expect(await servedSerial(port, caPem)).toBe(first.serial);

    const second = makeCert(join(dir, 'pki'), ca, 'second', { dns: [NAME] });
    await vol.rotate(second);
    await until(async () => (await servedSerial(port, caPem)) === second.serial, 100, 15_000);

    // A new certificate with a key that is not its own: refused, the served one stays.
    const third = makeCert(join(dir, 'pki'), ca, 'third', { dns: [NAME] });
    await vol.rotate({ cert: third.cert, key: first.key });
    await until(() => logText.includes('does not load; keeping the last good one'), 100, 15_000);
    expect(await servedSerial(port, caPem)).toBe(second.serial);
    expect(logText).toContain('TLS certificate reloaded');
  });

  it('a bad key pair at start is bad configuration (exit 2)', async () => {
    const ca = makeCa(join(dir, 'pki'), 'ca');
    const a = makeCert(join(dir, 'pki'), ca, 'a', { dns: [NAME] });
    const b = makeCert(join(dir, 'pki'), ca, 'b', { dns: [NAME] });
    await expect(start(`listen: 127.0.0.1:0\ntls: { certFile: ${a.cert}, keyFile: ${b.key} }\n`)).rejects.toMatchObject({ exitCode: 2, message: expect.stringMatching(/do not make a usable pair/) });
    await writeFile(join(dir, 'empty.pem'), 'nothing here\n');
    await expect(start(`listen: 127.0.0.1:0\ntls: { certFile: ${join(dir, 'empty.pem')}, keyFile: ${b.key} }\n`)).rejects.toMatchObject({ exitCode: 2, message: expect.stringMatching(/holds no PEM data/) });
  });

  it('peers are checked against peers.caFile: one with a certificate from another CA is refused before it is sent anything', async () => {
    const ours = makeCa(join(dir, 'pki'), 'ours');
    const theirs = makeCa(join(dir, 'pki'), 'theirs');
    const tokenFile = join(dir, 'peer-token');
    await writeFile(tokenFile, `${PEER_TOKEN}\n`);
    // The impostor: an HTTPS server with a certificate for the right name from another CA.
    const fake = makeCert(join(dir, 'pki'), theirs, 'impostor', { dns: [NAME], ip: ['127.0.0.1'] });
    const seen = { requests: 0, tlsErrors: 0 };
    const impostor = createHttpsServer({ cert: await readFile(fake.cert), key: await readFile(fake.key) }, (req, res) => {
      seen.requests++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ nodeId: 'impostor', protocol: 1 }));
    });
    impostor.on('tlsClientError', () => seen.tlsErrors++);
    servers.push(impostor);
    await new Promise<void>((r) => impostor.listen(0, '127.0.0.1', () => r()));
    const impostorUrl = `https://127.0.0.1:${(impostor.address() as { port: number }).port}`;

    const peerCfg = (name: string, statics: string[]) => {
      const leaf = makeCert(join(dir, 'pki'), ours, name, { dns: [NAME] });
      return `listen: 127.0.0.1:0\ntls: { certFile: ${leaf.cert}, keyFile: ${leaf.key} }\n` +
        `peers: { static: [${statics.join(', ')}], tokenFile: ${tokenFile}, caFile: ${ours.cert}, serverName: ${NAME} }\n`;
    };
    const honest = await start(peerCfg('honest', []));
    const d = await start(peerCfg('node', [impostorUrl, honest.url]));
    const live = async () => {
      const agent = new Agent({ connect: { ca: await readFile(ours.cert, 'utf8'), servername: NAME } });
      try {
        const r = await request(`${d.url}/metrics`, { dispatcher: agent });
        // Only the line we need: right after start, prom-client's event-loop gauges may say `Nan`.
        const line = (await r.body.text()).split('\n').find((l) => l.startsWith('swift_fetch_peers{state="live"} '));
        return line === undefined ? undefined : parsePrometheus(`# TYPE swift_fetch_peers gauge\n${line}\n`)[0]!.value;
      } finally {
        await agent.close();
      }
    };
    await until(async () => (await live()) === 1, 200, 15_000);
    // Several discovery rounds later the impostor is still not a peer, and never got a request.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await live()).toBe(1);
    expect(seen.tlsErrors).toBeGreaterThan(0);
    expect(seen.requests).toBe(0);
    expect(logText).not.toContain(PEER_TOKEN);
  });
});
