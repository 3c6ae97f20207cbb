import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { Agent } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { NetworkError } from '../../src/core/errors.js';
import { parseRef } from '../../src/core/ref.js';
import { HuggingFaceSource } from '../../src/sources/huggingface.js';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

function listen(host: string, handler: Parameters<typeof createServer>[1]): Promise<string> {
  const s = createServer(handler);
  servers.push(s);
  return new Promise((resolve) => s.listen(0, host, () => resolve(`http://${host}:${(s.address() as { port: number }).port}`)));
}

describe('HF file list pagination', () => {
  it('refuses a "next" page on another host instead of sending the token there', async () => {
    const seenElsewhere: IncomingHttpHeaders[] = [];
    const evil = await listen('127.0.0.2', (req, res) => {
      seenElsewhere.push(req.headers);
      res.end('[]');
    });
    const hub = await listen('127.0.0.1', (req, res) => {
      if (req.url!.includes('/revision/')) return res.end(JSON.stringify({ sha: 'c'.repeat(40) }));
      res.setHeader('link', `<${evil}/api/models/o/n/tree/x?cursor=2>; rel="next"`);
      res.end(JSON.stringify([{ type: 'file', path: 'a.txt', size: 1, oid: 'b'.repeat(40) }]));
    });
    const src = new HuggingFaceSource({ endpoint: hub, token: 'hf_secret' }, new Agent());
    await expect(src.resolve(parseRef('hf://o/n'))).rejects.toBeInstanceOf(NetworkError);
    expect(seenElsewhere).toEqual([]);
  });
});
