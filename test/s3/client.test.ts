/**
 * The S3 client against MinIO at the edges the pulls rely on: listings over several pages, keys that
 * need escaping, and which checksums count as a whole-object SHA-256.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipWithoutMinio, startMinio, type Minio } from '../support/minio.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest();
let minio: Minio;

describe.skipIf(skipWithoutMinio())('S3 client', () => {
  beforeAll(async () => {
    minio = await startMinio();
    await minio.createBucket('edge');
  }, 120_000);
  afterAll(async () => minio?.stop());

  it('lists every object under a prefix across pages, and nothing beside it', async () => {
    const keys = ['p/a', 'p/b/c', 'p/b/d', "p/we ird (1)+!'*.bin", 'p/ünï/cödé.json', 'p/z'];
    for (const k of keys) await minio.client.put('edge', k, Buffer.from(k), Buffer.byteLength(k));
    await minio.client.put('edge', 'p2/outside', Buffer.from('x'), 1);
    const listed = await minio.client.list('edge', 'p/', undefined, 2);
    expect(listed.map((o) => o.key).sort()).toEqual([...keys].sort());
    for (const o of listed) {
      expect(o.size).toBe(Buffer.byteLength(o.key));
      expect(o.etag).toMatch(/^[0-9a-f]{32}$/);
      // Keys that need escaping round-trip through GET as well.
      expect((await minio.client.getText('edge', o.key))!.text).toBe(o.key);
    }
  });

  it('takes a SHA-256 only from a whole-object checksum, never from a multipart composite', async () => {
    const body = Buffer.alloc(11 * 1024 * 1024, 7);
    await minio.client.put('edge', 'sum/single', body, body.length, { sha256: sha(body).toString('base64') });
    await minio.client.put('edge', 'sum/none', body, body.length);
    const part = 6 * 1024 * 1024;
    const id = await minio.client.createMultipart('edge', 'sum/multi');
    const pieces = [body.subarray(0, part), body.subarray(part)];
    const parts = [];
    for (const [i, p] of pieces.entries()) {
      const s = sha(p).toString('base64');
      parts.push({ partNumber: i + 1, etag: await minio.client.uploadPart('edge', 'sum/multi', id, i + 1, p, p.length, s), sha256: s });
    }
    await minio.client.completeMultipart('edge', 'sum/multi', id, parts);

    expect((await minio.client.head('edge', 'sum/single'))!.sha256).toBe(sha(body).toString('base64'));
    expect((await minio.client.head('edge', 'sum/none'))!.sha256).toBeUndefined();
    const multi = await minio.client.head('edge', 'sum/multi');
    expect(multi!.size).toBe(body.length);
    expect(multi!.sha256).toBeUndefined();
    expect(await minio.client.head('edge', 'sum/absent')).toBeUndefined();
  });

  it('refuses a part whose bytes do not match the checksum sent with it (exit 5)', async () => {
    const id = await minio.client.createMultipart('edge', 'bad/part');
    const p = Buffer.alloc(5 * 1024 * 1024, 1);
    const wrong = sha(Buffer.from('something else')).toString('base64');
    await expect(minio.client.uploadPart('edge', 'bad/part', id, 1, p, p.length, wrong)).rejects.toMatchObject({ exitCode: 5 });
    await minio.client.abortMultipart('edge', 'bad/part', id);
  });
});
