/**
 * Peers answering without end (issue 12, item 7): a peer that answered /v1/peer/info with 1 GiB
 * of JSON took its victim to 2.2 GB. Real hostile HTTP servers on loopback against the real peer
 * client and discovery.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_PEER_INFO_BYTES, MAX_PEER_STATUS_BYTES, PeerClient, PeerDiscovery, PeerProtocolError, PeerToken } from '../../src/p2p/index.js';
import { startHostileServer, streamWithoutEnd, type HostileServer } from '../support/index.js';

const SHA = 'a'.repeat(64);
let server: HostileServer | undefined;
let client: PeerClient | undefined;
afterEach(async () => {
  await client?.close();
  await server?.close();
  client = server = undefined;
});

/** Kernel socket buffers on loopback hold a few MiB that the server counts as sent. */
const SLACK = 16 * 1024 * 1024;

describe('peer answers are bounded', () => {
  it('an endless /v1/peer/info is cut at its cap: the probe fails and the liar is not a peer', async () => {
    const sent: Array<Promise<number>> = [];
    server = await startHostileServer((_req, res) => void sent.push(streamWithoutEnd(res, '{"nodeId":"', 'x')));
    client = new PeerClient({ token: PeerToken.fromValue('t'), nodeId: 'victim', timeoutMs: 20_000 });
    const err = await client.info(server.url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerProtocolError);
    expect(String((err as Error).message)).toMatch(/larger than 64 KiB/);
    expect(await sent[0]).toBeLessThan(MAX_PEER_INFO_BYTES + SLACK);

    const discovery = new PeerDiscovery({ selfId: 'victim', client, static: [server.url] });
    await discovery.refresh();
    expect(discovery.all()).toEqual([]);
    for (const s of sent) expect(await s).toBeLessThan(MAX_PEER_INFO_BYTES + SLACK);
  });

  it('an endless blob status, and an endless 404 on a data request, are cut at theirs', async () => {
    const sent: Array<Promise<number>> = [];
    server = await startHostileServer((req, res) => {
      if (req.url!.includes('/data')) {
        res.statusCode = 404;
        sent.push(streamWithoutEnd(res, '{"nodeId":"', 'x'));
        return;
      }
      sent.push(streamWithoutEnd(res, '{"nodeId":"', 'x'));
    });
    client = new PeerClient({ token: PeerToken.fromValue('t'), nodeId: 'victim', timeoutMs: 20_000 });
    await expect(client.status(server.url, SHA, false)).rejects.toBeInstanceOf(PeerProtocolError);
    await expect(client.data(server.url, SHA, 0, 10, { signal: AbortSignal.timeout(20_000), fetching: false })).rejects.toBeInstanceOf(PeerProtocolError);
    expect(sent).toHaveLength(2);
    for (const s of sent) expect(await s).toBeLessThan(MAX_PEER_STATUS_BYTES + SLACK);
  });
});
