import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startFakeHub } from '../fakehub/index.js';
import type { FakeHub } from '../fakehub/index.js';
import { fetchBlobs } from '../../src/transfer/index.js';
import { AuthError } from '../../src/core/errors.js';
import { sha256Key } from '../../src/core/blob-key.js';
import type { BlobRequest, TransferEvent } from '../../src/core/transfer.js';
import { MiB, makeContent, tempDir } from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function hubWithRepo(token = 'hf_s3cret') {
  const hub: FakeHub = await startFakeHub({});
  cleanups.push(() => hub.close());
  const weights = makeContent(12 * MiB + 5, 71);
  const config = Buffer.from('{"model_type": "qwen2"}\n');
  const repo = await hub.addRepo({ id: 'org/model', files: { 'model.safetensors': weights, 'config.json': config }, gated: { token } });
  const t = tempDir();
  cleanups.push(t.cleanup);
  const opts = { partialDir: join(t.dir, 'store/.swift-fetch/partial'), stateDir: join(t.dir, 'state'), env: {}, chunkSize: 2 * MiB, retryBaseMs: 20, retryMaxMs: 200 };
  const requests = (hubHeaders: Record<string, string>, hubKind: 'hf' | 'ms' = 'hf'): BlobRequest[] =>
    repo.files.map((f) => ({
      key: sha256Key(f.sha256),
      label: f.path,
      size: f.size,
      ...(f.lfs ? { sha256: f.sha256 } : { gitOid: f.gitOid }),
      origin: {
        url:
          hubKind === 'hf'
            ? `${hub.hfEndpoint}/org/model/resolve/${repo.commit}/${f.path}`
            : `${hub.msEndpoint}/api/v1/models/org/model/repo?Revision=${repo.commit}&FilePath=${encodeURIComponent(f.path)}`,
        hubHeaders,
      },
    }));
  return { hub, repo, weights, config, opts, requests };
}

describe('against the fake hub', () => {
  it('pulls a gated HF repo through CDN faults; the token never reaches the CDN', async () => {
    const { hub, weights, config, opts, requests } = await hubWithRepo();
    hub.fault({ kind: 'reset', host: 'cdn', path: 'model.safetensors', afterBytes: 300_000, rst: true });
    hub.fault({ kind: 'expireSigned', host: 'cdn', path: 'model.safetensors' });
    hub.fault({ kind: 'status', host: 'cdn', path: 'model.safetensors', status: 503, retryAfter: 0 });
    hub.fault({ kind: 'corrupt', host: 'cdn', path: 'model.safetensors', offset: 5 * MiB });
    const events: TransferEvent[] = [];
    const got = await fetchBlobs(requests({ authorization: 'Bearer hf_s3cret' }), { ...opts, onEvent: (e) => events.push(e) });
    const byLabel = new Map(got.map((g, i) => [requests({})[i]!.label, g]));
    expect(readFileSync(byLabel.get('model.safetensors')!.path).equals(weights)).toBe(true);
    expect(readFileSync(byLabel.get('config.json')!.path).equals(config)).toBe(true);
    expect(events.some((e) => e.type === 'hash-mismatch')).toBe(true);
    expect(events.filter((e) => e.type === 'retry').length).toBeGreaterThanOrEqual(2);
    const cdn = hub.log.filter((r) => r.host === 'cdn');
    expect(cdn.length).toBeGreaterThan(0);
    for (const r of cdn) {
      expect(r.headers.authorization).toBeUndefined();
      expect(JSON.stringify(r.headers)).not.toContain('hf_s3cret');
    }
    // More than one signed URL was handed out: the expired one was re-resolved through the hub.
    const resolves = hub.log.filter((r) => r.host === 'hub' && r.path === 'model.safetensors' && r.status === 302);
    expect(resolves.length).toBeGreaterThanOrEqual(2);
  });

  it('pulls through the ModelScope download route', async () => {
    const { weights, opts, requests } = await hubWithRepo('ms_tok');
    const got = await fetchBlobs(requests({ authorization: 'Bearer ms_tok', cookie: 'm_session_id=ms_tok' }, 'ms'), opts);
    expect(got.some((g) => readFileSync(g.path).equals(weights))).toBe(true);
  });

  it('a gated repo without a token is an AuthError naming the token variables', async () => {
    const { opts, requests } = await hubWithRepo();
    const err = await fetchBlobs(requests({}), opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/HF_TOKEN/);
    expect((err as Error).message).not.toContain('hf_s3cret');
  });
});
