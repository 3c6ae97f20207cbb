import { createHash } from 'node:crypto';
import { expect } from 'vitest';
import type { FakeHub, RequestLogEntry } from '../fakehub/index.js';
import { readTree } from '../support/index.js';

/** Deterministic bytes that do not compress or repeat, so a shifted or mixed-up chunk shows. */
export function noise(size: number, seed: string): Buffer {
  const out = Buffer.alloc(size);
  let block = 0;
  for (let off = 0; off < size; off += 32) {
    createHash('sha256').update(`${seed}:${block++}`).digest().copy(out, off);
  }
  return out;
}

/** A repo with LFS and regular files, some in nested folders. */
export function sampleFiles(): Record<string, Buffer> {
  return {
    'config.json': Buffer.from('{"model_type": "gpt2", "n_layer": 2}\n'),
    'README.md': Buffer.from('# sample\n'),
    'model.safetensors': noise(3 * 1024 * 1024 + 123, 'weights'),
    'tokenizer/vocab.txt': Buffer.from('hello\nworld\n'),
    'tokenizer/nested/merges.txt': Buffer.from('h e\nl l\n'),
    'shards/part-00001.bin': noise(70_000, 'shard'),
    'data/large-text.txt': noise(1_300_000, 'text'), // LFS by size (>= 1 MiB)
  };
}

/** The downloaded folder holds exactly the expected files, byte for byte. */
export async function expectSameFiles(dir: string, files: Record<string, Buffer>, skip?: (rel: string) => boolean): Promise<void> {
  const got = await readTree(dir, skip);
  expect([...got.keys()].sort()).toEqual(Object.keys(files).sort());
  for (const [path, content] of Object.entries(files)) {
    expect(got.get(path)!.equals(content), `content of ${path}`).toBe(true);
  }
}

export function cdnRequests(hub: FakeHub): RequestLogEntry[] {
  return hub.log.filter((e) => e.host === 'cdn');
}

/** The hub token must never leave the hub: no Authorization header and no session cookie at the CDN. */
export function expectNoCredentialsAtCdn(hub: FakeHub): void {
  for (const e of cdnRequests(hub)) {
    expect(e.headers.authorization, `authorization sent to CDN: ${e.url}`).toBeUndefined();
    expect(String(e.headers.cookie ?? ''), `cookie sent to CDN: ${e.url}`).not.toContain('m_session_id');
  }
}

/** "METHOD pathname" of every hub request, for reporting which endpoints a client called. */
export function endpointsCalled(hub: FakeHub, host: 'hub' | 'cdn' = 'hub'): string[] {
  return hub.log.filter((e) => e.host === host).map((e) => `${e.method} ${e.url.split('?')[0]}`);
}
