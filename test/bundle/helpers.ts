/** Shared helpers for the bundle and init tests: real stores, real tar files, real processes. */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import tar from 'tar-stream';
import type { FakeHub } from '../fakehub/index.js';

export const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** Deterministic, incompressible-looking bytes. */
export function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/** Endpoints that refuse every connection: port 9 (discard) on loopback is not listening here. */
export const NOWHERE = 'http://127.0.0.1:9';

export function hubEnv(hub: FakeHub | undefined, extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    HF_ENDPOINT: hub?.hfEndpoint ?? NOWHERE,
    MODELSCOPE_ENDPOINT: hub?.msEndpoint ?? NOWHERE,
    HF_TOKEN: undefined,
    HUGGING_FACE_HUB_TOKEN: undefined,
    HF_HOME: '/nonexistent-hf-home',
    MODELSCOPE_API_TOKEN: undefined,
    USE_HF: undefined,
    HTTPS_PROXY: undefined,
    HTTP_PROXY: undefined,
    SWIFT_FETCH_DAEMON: undefined,
    ...extra,
  };
}

export function storeArgs(dir: string, name = 'store'): string[] {
  return ['--store', join(dir, name), '--state-dir', join(dir, `${name}-state`)];
}

/** Everything below `dir` (relative paths, directories with a trailing "/"), or [] when missing. */
export async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(abs: string, rel: string): Promise<void> {
    let entries;
    try {
      entries = await fsp.readdir(abs, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out.push(`${r}/`);
        await walk(join(abs, e.name), r);
      } else {
        out.push(r);
      }
    }
  }
  await walk(dir, '');
  return out.sort();
}

/**
 * What a failed import may leave in a store: only the empty internal skeleton. No blob, no record,
 * no ref, no view, no staging leftovers.
 */
export async function assertNothingPublished(store: string): Promise<void> {
  const left = (await listTree(store)).filter((p) => !p.endsWith('/'));
  if (left.length > 0) throw new Error(`store ${store} is not empty after a failed import: ${left.join(', ')}`);
  const views = (await listTree(store)).filter((p) => /^(models|huggingface|modelscope)\//.test(p) || p.startsWith('.swift-fetch/records') || p.startsWith('.swift-fetch/refs'));
  if (views.length > 0) throw new Error(`store ${store} has views or records after a failed import: ${views.join(', ')}`);
}

export interface TarEntry {
  name: string;
  type?: 'file' | 'symlink' | 'link' | 'directory' | 'character-device' | 'block-device' | 'fifo';
  content?: Buffer | string;
  linkname?: string;
  /** Header size that differs from the content length (to fake a lie). */
  size?: number;
}

/** Build a tar in memory with tar-stream (test bundles are small). */
export async function buildTar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = new Promise<Buffer>((resolve, reject) => {
    pack.on('data', (c: unknown) => void chunks.push(c as Buffer));
    pack.on('end', () => resolve(Buffer.concat(chunks)));
    pack.on('error', reject);
  });
  for (const e of entries) {
    const type = e.type ?? 'file';
    const header = { name: e.name, type, mode: 0o644, mtime: new Date(0), ...(e.linkname ? { linkname: e.linkname } : {}) };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (type === 'file') pack.entry({ ...header, size: Buffer.byteLength(e.content ?? '') }, e.content ?? '', cb);
      else if (type === 'character-device' || type === 'block-device') pack.entry({ ...header, devmajor: 1, devminor: 3 }, cb).end(undefined);
      else pack.entry(header, cb).end(undefined);
    });
  }
  pack.finalize();
  return collected;
}

/** Read a tar into (name, type, content) entries. */
export async function readTar(buf: Buffer): Promise<Array<{ name: string; type: string; content: Buffer }>> {
  const ex = tar.extract();
  const out: Array<{ name: string; type: string; content: Buffer }> = [];
  const done = (async () => {
    for await (const entry of ex) {
      const parts: Buffer[] = [];
      for await (const c of entry as unknown as AsyncIterable<Buffer>) parts.push(c);
      out.push({ name: entry.header.name, type: entry.header.type, content: Buffer.concat(parts) });
    }
  })();
  ex.end(buf);
  await done;
  return out;
}

export interface BundleManifestJson {
  models: Array<{ hub: string; org: string; name: string; commit: string; files: Array<{ path: string; size: number; sha256?: string; gitOid?: string; lfs: boolean }> }>;
  blobs: Array<{ sha256?: string; size: number }>;
}

/**
 * Rewrite a real bundle: `edit` may change the manifest and the blob entries (name -> content)
 * in place; the result is a well-formed tar again (what a forger with a text editor produces).
 */
export async function rewriteBundle(
  from: string,
  to: string,
  edit: (manifest: BundleManifestJson, blobs: Map<string, Buffer>) => void,
): Promise<void> {
  const entries = await readTar(await fsp.readFile(from));
  const manifest = JSON.parse(entries[0]!.content.toString()) as BundleManifestJson;
  const blobs = new Map(entries.slice(1).map((e) => [e.name, e.content]));
  edit(manifest, blobs);
  await fsp.writeFile(to, await buildTar([{ name: entries[0]!.name, content: JSON.stringify(manifest) }, ...[...blobs].map(([name, content]) => ({ name, content }))]));
}
