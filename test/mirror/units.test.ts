import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/core/manifest.js';
import { parseConfig } from '../../src/daemon/config.js';
import { allowMatcher, normalizeAllowGlob } from '../../src/mirror/allow.js';
import { credentialsOf } from '../../src/mirror/credentials.js';
import { parseRange } from '../../src/mirror/range.js';
import { hfTreeEntries, lfsPointerSize, msFileRows, page } from '../../src/mirror/views.js';
import { startFakeHub } from '../fakehub/index.js';

describe('Range header', () => {
  it('reads a-b, a- and -n against the size, and says 416 or "whole file" where RFC 9110 does', () => {
    expect(parseRange('bytes=0-9', 100)).toEqual({ start: 0, end: 10 });
    expect(parseRange('bytes=90-', 100)).toEqual({ start: 90, end: 100 });
    expect(parseRange('bytes=90-1000', 100)).toEqual({ start: 90, end: 100 });
    expect(parseRange('bytes=-10', 100)).toEqual({ start: 90, end: 100 });
    expect(parseRange('bytes=-1000', 100)).toEqual({ start: 0, end: 100 });
    expect(parseRange('bytes=100-', 100)).toBe('unsatisfiable');
    expect(parseRange('bytes=-0', 100)).toBe('unsatisfiable');
    expect(parseRange('bytes=5-2', 100)).toBeUndefined();
    expect(parseRange('bytes=0-1,5-6', 100)).toBeUndefined();
    expect(parseRange('items=0-1', 100)).toBeUndefined();
    expect(parseRange(undefined, 100)).toBeUndefined();
    expect(parseRange('bytes=0-', 0)).toBeUndefined();
  });
});

describe('mirror.allow', () => {
  it('matches hub://ORG/NAME globs; no scheme means both hubs; none at all means everything', () => {
    const allow = allowMatcher(['hf://Qwen/*', 'modelscope://acme/model-?', 'shared/*']);
    expect(allow('hf', 'Qwen/Qwen2.5-7B')).toBe(true);
    expect(allow('ms', 'Qwen/Qwen2.5-7B')).toBe(false);
    expect(allow('ms', 'acme/model-1')).toBe(true);
    expect(allow('ms', 'acme/model-10')).toBe(false);
    expect(allow('hf', 'shared/x')).toBe(true);
    expect(allow('ms', 'shared/x')).toBe(true);
    expect(allowMatcher(undefined)('hf', 'any/thing')).toBe(true);
    expect(allowMatcher([])('hf', 'any/thing')).toBe(false);
  });
  it('refuses patterns that cannot name a repo', () => {
    expect(() => normalizeAllowGlob('s3://bucket/*')).toThrow(/unknown scheme/);
    expect(() => normalizeAllowGlob('hf://Qwen/x@main')).toThrow(/without a revision/);
    expect(normalizeAllowGlob('huggingface://Qwen/*')).toBe('hf://Qwen/*');
  });
  it('is the daemon config key `mirror`: true, or {allow}', () => {
    const base = 'listen: 127.0.0.1:0\nstore: /tmp/s\nstateDir: /tmp/t\n';
    expect(parseConfig(`${base}mirror: true\n`, 'c.yaml').mirror).toEqual({});
    expect(parseConfig(`${base}mirror: {allow: ["hf://Qwen/*", "modelscope://a/*"]}\n`, 'c.yaml').mirror).toEqual({ allow: ['hf://Qwen/*', 'ms://a/*'] });
    expect(parseConfig(`${base}mirror: false\n`, 'c.yaml').mirror).toBeUndefined();
    expect(parseConfig(base, 'c.yaml').mirror).toBeUndefined();
    expect(() => parseConfig(`${base}mirror: {allow: ["s3://x/*"]}\n`, 'c.yaml')).toThrow(/c\.yaml: mirror\.allow: .*unknown scheme/);
    expect(() => parseConfig(`${base}mirror: {deny: []}\n`, 'c.yaml')).toThrow(/mirror\.deny: unknown key \(expected one of: allow\)/);
  });
});

describe('client credentials', () => {
  it('are known by a hash that tells tokens apart and never contains them', () => {
    const a = credentialsOf('hf', { authorization: 'Bearer hf_secret_a' });
    const b = credentialsOf('hf', { authorization: 'Bearer hf_secret_b' });
    expect(a.key).not.toBe(b.key);
    expect(a.key).toBe(credentialsOf('hf', { authorization: 'Bearer hf_secret_a' }).key);
    expect(a.key).not.toContain('secret');
    expect(a.headers).toEqual({ authorization: 'Bearer hf_secret_a' });
    expect(credentialsOf('hf', {}).key).toBe('anonymous');
    // HF ignores cookies; ModelScope's session cookie is a credential, and nothing else of the cookie header goes upstream.
    expect(credentialsOf('hf', { cookie: 'm_session_id=x' }).key).toBe('anonymous');
    const ms = credentialsOf('ms', { cookie: 'theme=dark; m_session_id=ms-tok' });
    expect(ms.token).toBe('ms-tok');
    expect(ms.headers).toEqual({ cookie: 'm_session_id=ms-tok' });
  });
});

describe('listings built from a manifest', () => {
  const sha = (s: string) => createHash('sha256').update(s).digest('hex');
  const m: Manifest = {
    ref: { hub: 'hf', org: 'o', name: 'n', revision: 'c'.repeat(40) },
    commit: 'c'.repeat(40),
    files: [
      { path: 'a/b/c.txt', size: 3, gitOid: '1'.repeat(40), lfs: false },
      { path: 'a/x.bin', size: 2_000_000, sha256: sha('x'), gitOid: '2'.repeat(40), lfs: true },
      { path: 'z.json', size: 2, gitOid: '3'.repeat(40), lfs: false },
    ],
  };

  it('HF tree: folders and files, recursive or one level, under a folder, with LFS entries', () => {
    expect(hfTreeEntries(m, '', true)!.map((e) => `${e.type}:${e.path}`)).toEqual(['directory:a', 'directory:a/b', 'file:a/b/c.txt', 'file:a/x.bin', 'file:z.json']);
    expect(hfTreeEntries(m, '', false)!.map((e) => e.path)).toEqual(['a', 'z.json']);
    expect(hfTreeEntries(m, 'a', false)!.map((e) => e.path)).toEqual(['a/b', 'a/x.bin']);
    expect(hfTreeEntries(m, 'nope', true)).toBeUndefined();
    const lfs = hfTreeEntries(m, 'a', false)!.find((e) => e.path === 'a/x.bin')!;
    expect(lfs).toMatchObject({ oid: '2'.repeat(40), size: 2_000_000, lfs: { oid: sha('x'), size: 2_000_000 } });
  });

  it('pages hand out a cursor until the last item', () => {
    const items = [1, 2, 3, 4, 5, 6, 7];
    const seen: number[] = [];
    let cursor: string | null = null;
    for (let i = 0; i < 10; i++) {
      const p: { items: number[]; next: string | undefined } = page(items, cursor, 3);
      seen.push(...p.items);
      if (!p.next) break;
      cursor = p.next;
    }
    expect(seen).toEqual(items);
  });

  it('the LFS pointer size is the one the Hub lists', async () => {
    const hub = await startFakeHub();
    try {
      const added = await hub.addRepo({ id: 'o/n', files: { 'w.safetensors': Buffer.alloc(123_456, 7) } });
      const tree = (await (await fetch(`${hub.hfEndpoint}/api/models/o/n/tree/${added.commit}?recursive=true`)).json()) as Array<{ lfs?: { pointerSize: number } }>;
      expect(lfsPointerSize(added.files[0]!.sha256, 123_456)).toBe(tree[0]!.lfs!.pointerSize);
    } finally {
      await hub.close();
    }
  });

  it('ModelScope rows carry Sha256 and the commit, and folders as tree rows', () => {
    const rows = msFileRows({ ...m, ref: { ...m.ref, hub: 'ms' } }, '', true, 1)!;
    expect(rows.map((r) => `${r.Type}:${r.Path}`)).toEqual(['tree:a', 'tree:a/b', 'blob:a/b/c.txt', 'blob:a/x.bin', 'blob:z.json']);
    expect(rows.find((r) => r.Path === 'a/x.bin')).toMatchObject({ Sha256: sha('x'), IsLFS: true, Revision: m.commit, Size: 2_000_000 });
    expect(msFileRows(m, 'a/b', false, 1)!.map((r) => r.Path)).toEqual(['a/b/c.txt']);
    expect(msFileRows(m, 'q', true, 1)).toBeUndefined();
  });
});
