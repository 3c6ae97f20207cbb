import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { tmpDir } from '../support/index.js';
import { startFakeHub, type FakeHub } from './index.js';

const BIG = randomBytes(2 * 1024 * 1024 + 3);
const TEXT = Buffer.from('a small regular file served by the hub itself\n'.repeat(20));
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function cdnUrl(hub: FakeHub, path = 'model.safetensors', repo = 'org/model'): Promise<string> {
  const res = await fetch(`${hub.hfEndpoint}/${repo}/resolve/main/${path}`, { method: 'HEAD', redirect: 'manual' });
  expect(res.status).toBe(302);
  return res.headers.get('location')!;
}

function diffOffsets(a: Buffer, b: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) out.push(i);
  return out;
}

describe('fault switches', () => {
  let hub: FakeHub;
  beforeAll(async () => {
    hub = await startFakeHub();
    await hub.addRepo({ id: 'org/model', files: { 'model.safetensors': BIG, 'notes.txt': TEXT } });
  });
  afterAll(async () => {
    await hub.close();
  });
  beforeEach(() => {
    hub.clearFaults();
    hub.resetStats();
    delete hub.perConnectionRate;
  });

  it('status: answers the injected status with Retry-After, `times` times, then recovers', async () => {
    hub.fault({ kind: 'status', status: 503, retryAfter: 7, host: 'cdn', path: 'model.safetensors', times: 2 });
    const url = await cdnUrl(hub); // a HEAD on the hub: host filter leaves the fault for the CDN
    for (let i = 0; i < 2; i++) {
      const res = await fetch(url);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('7');
      await res.arrayBuffer();
    }
    const ok = await fetch(url);
    expect(ok.status).toBe(200);
    expect(sha256(Buffer.from(await ok.arrayBuffer()))).toBe(sha256(BIG));
    expect(hub.log.filter((e) => e.fault === 'status').map((e) => e.host)).toEqual(['cdn', 'cdn']);
  });

  it('status: matches API calls by URL path and by RegExp', async () => {
    hub.fault({ kind: 'status', status: 429, retryAfter: 1, path: '/api/models/org/model/revision/main' });
    hub.fault({ kind: 'status', status: 500, path: /\/tree\// });
    const info = await fetch(`${hub.hfEndpoint}/api/models/org/model/revision/main`);
    expect(info.status).toBe(429);
    expect(info.headers.get('retry-after')).toBe('1');
    const tree = await fetch(`${hub.hfEndpoint}/api/models/org/model/tree/main?recursive=true`);
    expect(tree.status).toBe(500);
    expect((await fetch(`${hub.hfEndpoint}/api/models/org/model/revision/main`)).status).toBe(200);
  });

  it('status: times Infinity persists until clearFaults', async () => {
    hub.fault({ kind: 'status', status: 502, path: 'notes.txt', times: Infinity });
    for (let i = 0; i < 3; i++) expect((await fetch(`${hub.hfEndpoint}/org/model/resolve/main/notes.txt`)).status).toBe(502);
    hub.clearFaults();
    expect((await fetch(`${hub.hfEndpoint}/org/model/resolve/main/notes.txt`)).status).toBe(200);
  });

  it('reset: destroys the connection after N body bytes, counted as sent', async () => {
    const url = await cdnUrl(hub);
    hub.resetStats();
    hub.fault({ kind: 'reset', afterBytes: 100_000, host: 'cdn' });
    const res = await fetch(url);
    expect(res.status).toBe(200);
    await expect(res.arrayBuffer()).rejects.toThrow();
    expect(hub.bytesSent({ host: 'cdn', path: 'model.safetensors' })).toBe(100_000);
    const again = await fetch(url);
    expect(sha256(Buffer.from(await again.arrayBuffer()))).toBe(sha256(BIG));
  });

  it('reset with rst: the body fails too (RST vs FIN is checked with a Python client in test/interop)', async () => {
    const url = await cdnUrl(hub);
    hub.fault({ kind: 'reset', afterBytes: 5000, host: 'cdn', rst: true });
    const res = await fetch(url);
    await expect(res.arrayBuffer()).rejects.toThrow();
    expect(hub.bytesSent({ host: 'cdn' })).toBe(5000);
  });

  it('faults are consumed in queue order by matching requests', async () => {
    const url = await cdnUrl(hub);
    hub.fault({ kind: 'reset', afterBytes: 10, path: 'model.safetensors', host: 'cdn' });
    hub.fault({ kind: 'status', status: 503, path: 'model.safetensors', host: 'cdn' });
    const first = await fetch(url);
    expect(first.status).toBe(200);
    await expect(first.arrayBuffer()).rejects.toThrow();
    const second = await fetch(url);
    expect(second.status).toBe(503);
    await second.arrayBuffer();
    expect((await fetch(url)).status).toBe(200);
  });

  it('corrupt: flips exactly one byte at the file offset, only in responses covering it', async () => {
    const url = await cdnUrl(hub);
    const offset = 1_500_000;
    hub.fault({ kind: 'corrupt', offset, path: 'model.safetensors' });
    // A range that does not cover the offset leaves the fault queued.
    const before = await fetch(url, { headers: { range: 'bytes=0-999' } });
    expect(Buffer.from(await before.arrayBuffer()).equals(BIG.subarray(0, 1000))).toBe(true);
    const covering = await fetch(url, { headers: { range: `bytes=${offset - 10}-${offset + 10}` } });
    expect(covering.status).toBe(206);
    const got = Buffer.from(await covering.arrayBuffer());
    expect(diffOffsets(got, BIG.subarray(offset - 10, offset + 11))).toEqual([10]);
    expect(got[10]).toBe(BIG[offset]! ^ 0xff);
    // Consumed: the next full download is clean.
    expect(sha256(Buffer.from(await (await fetch(url)).arrayBuffer()))).toBe(sha256(BIG));

    hub.fault({ kind: 'corrupt', offset: 3, path: 'notes.txt' });
    const text = Buffer.from(await (await fetch(`${hub.hfEndpoint}/org/model/resolve/main/notes.txt`)).arrayBuffer());
    expect(diffOffsets(text, TEXT)).toEqual([3]);
  });

  it('ignoreRange: answers a ranged request with 200 and the whole body', async () => {
    const url = await cdnUrl(hub);
    hub.fault({ kind: 'ignoreRange', host: 'cdn' });
    const res = await fetch(url, { headers: { range: 'bytes=100-199' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-range')).toBeNull();
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(BIG));
    const next = await fetch(url, { headers: { range: 'bytes=100-199' } });
    expect(next.status).toBe(206);
    await next.arrayBuffer();
  });

  it('expireSigned: the next CDN request answers 403 expired, later ones succeed', async () => {
    const url = await cdnUrl(hub);
    hub.fault({ kind: 'expireSigned', path: 'model.safetensors' });
    const res = await fetch(url);
    expect(res.status).toBe(403);
    expect(await res.text()).toContain('Request has expired');
    expect((await fetch(url, { headers: { range: 'bytes=0-0' } })).status).toBe(206);
  });

  it('perConnectionRate: throttled responses still carry the exact bytes', async () => {
    hub.perConnectionRate = 4 * 1024 * 1024;
    const url = await cdnUrl(hub);
    const res = await fetch(url, { headers: { range: 'bytes=0-299999' } });
    expect(Buffer.from(await res.arrayBuffer()).equals(BIG.subarray(0, 300_000))).toBe(true);
  });

  it('bytesSent counts body bytes by host and path; resetStats clears them', async () => {
    const url = await cdnUrl(hub);
    await (await fetch(url, { headers: { range: 'bytes=10-1009' } })).arrayBuffer();
    await (await fetch(`${hub.hfEndpoint}/org/model/resolve/main/notes.txt`)).arrayBuffer();
    expect(hub.bytesSent({ host: 'cdn', path: 'model.safetensors' })).toBe(1000);
    expect(hub.bytesSent({ host: 'hub', path: 'notes.txt' })).toBe(TEXT.length);
    expect(hub.bytesSent({ host: 'hub', path: 'model.safetensors' })).toBe(0);
    expect(hub.bytesSent({ path: '/org/model/resolve/main/notes.txt' })).toBe(TEXT.length);
    expect(hub.bytesSent()).toBe(1000 + TEXT.length);
    const logged = hub.log.find((e) => e.host === 'cdn')!;
    expect(logged.range).toBe('bytes=10-1009');
    expect(logged.status).toBe(206);
    hub.resetStats();
    expect(hub.bytesSent()).toBe(0);
    expect(hub.log).toHaveLength(0);
  });
});

describe('stall', () => {
  it('goes silent after N bytes with the socket open, and close() cleans it up', async () => {
    const hub = await startFakeHub();
    try {
      await hub.addRepo({ id: 'org/model', files: { 'model.safetensors': BIG } });
      const url = await cdnUrl(hub);
      hub.fault({ kind: 'stall', afterBytes: 70_000, host: 'cdn' });
      const res = await fetch(url);
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      let got = 0;
      while (got < 70_000) {
        const { value, done } = await reader.read();
        expect(done).toBe(false);
        got += value!.length;
      }
      expect(got).toBe(70_000);
      // Silence is what the client must detect; here we only check that nothing more arrives.
      const pending = reader.read();
      const outcome = await Promise.race([pending.then(() => 'data' as const, () => 'error' as const), sleep(500).then(() => 'silent' as const)]);
      expect(outcome).toBe('silent');
      expect(hub.log.at(-1)!.bodyBytes).toBe(70_000);
      await hub.close();
      await expect(pending).rejects.toThrow();
    } finally {
      await hub.close();
    }
  });
});

describe('repos from disk', () => {
  it('streams files from disk with ranges and faults', async () => {
    const dir = await tmpDir();
    await mkdir(join(dir, 'sub'), { recursive: true });
    await writeFile(join(dir, 'model.safetensors'), BIG);
    await writeFile(join(dir, 'sub', 'notes.txt'), TEXT);
    await mkdir(join(dir, '.git'), { recursive: true });
    await writeFile(join(dir, '.git', 'HEAD'), 'ref: refs/heads/main\n');
    const hub = await startFakeHub();
    try {
      const added = await hub.addRepoFromDir('disk/repo', dir, { gated: { token: 't' } });
      expect(added.files.map((f) => f.path)).toEqual(['model.safetensors', 'sub/notes.txt']);
      expect(added.files[0]!.sha256).toBe(sha256(BIG));
      const head = await fetch(`${hub.hfEndpoint}/disk/repo/resolve/main/model.safetensors`, { method: 'HEAD', redirect: 'manual', headers: { authorization: 'Bearer t' } });
      const url = head.headers.get('location')!;
      const part = await fetch(url, { headers: { range: 'bytes=-4096' } });
      expect(Buffer.from(await part.arrayBuffer()).equals(BIG.subarray(BIG.length - 4096))).toBe(true);
      hub.fault({ kind: 'corrupt', offset: BIG.length - 1 });
      const whole = Buffer.from(await (await fetch(url)).arrayBuffer());
      expect(diffOffsets(whole, BIG)).toEqual([BIG.length - 1]);
      const text = await fetch(`${hub.msEndpoint}/api/v1/models/disk/repo/repo?Revision=master&FilePath=sub%2Fnotes.txt`, { headers: { cookie: 'm_session_id=t' } });
      expect(Buffer.from(await text.arrayBuffer()).equals(TEXT)).toBe(true);
    } finally {
      await hub.close();
    }
  });
});
