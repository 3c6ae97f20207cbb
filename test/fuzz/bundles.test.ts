/**
 * Properties of bundles: parseManifest turns any JSON into a manifest whose every file carries
 * its digests and a safe path, or refuses it with our error; the archive-end walker finds the end
 * of any archive tar-stream writes (pax and long names included) whatever follows it and however
 * the input is cut; and the streaming reader, fed a real bundle that was corrupted, truncated,
 * padded or cut into random pieces, either rejects it with our error or delivers only bytes that
 * match their declared digests.
 */
import { Readable } from 'node:stream';
import fc from 'fast-check';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { ArchiveEnd } from '../../src/bundle/archive-end.js';
import { parseManifest } from '../../src/bundle/format.js';
import { readBundle } from '../../src/bundle/read.js';
import { isSwiftFetchError } from '../../src/core/errors.js';
import { BlobHasher, gitBlobId, sha256Hex } from '../../src/core/integrity.js';
import { validateListing } from '../../src/core/paths.js';
import { buildTar } from '../bundle/helpers.js';
import { FUZZ_RUNS, FUZZ_RUNS_IO, fuzzParams } from './config.js';

const COMMIT = 'c'.repeat(40);

/** A valid manifest (and its blobs) for `contents` under `paths`, as bundle create writes it. */
function bundleOf(files: Array<{ path: string; content: Uint8Array }>) {
  const blobs = new Map<string, Uint8Array>();
  const manifest = {
    format: 'swift-fetch-bundle',
    version: 1,
    created: '2025-01-01T00:00:00.000Z',
    tool: { name: 'swift-fetch', version: '0.0.0' },
    models: [
      {
        hub: 'hf', org: 'org', name: 'model', revision: 'main', revisions: ['main'], commit: COMMIT, complete: true,
        files: files.map((f) => {
          const sha256 = sha256Hex(f.content);
          blobs.set(sha256, f.content);
          return { path: f.path, size: f.content.length, sha256, gitOid: gitBlobId(f.content), lfs: false, verified: true };
        }),
      },
    ],
    blobs: [] as Array<{ sha256: string; size: number }>,
  };
  manifest.blobs = [...blobs].map(([sha256, c]) => ({ sha256, size: c.length }));
  return { manifest, blobs };
}

const fileName = fc.stringMatching(/^[a-z]{1,8}(\.json|\.bin|\/[a-z]{1,6}\.txt)?$/);
const files = fc.uniqueArray(fc.record({ path: fileName, content: fc.uint8Array({ maxLength: 2048 }) }), { minLength: 1, maxLength: 4, selector: (f) => f.path }).filter((fs) => {
  try {
    validateListing(fs.map((f) => f.path));
    return true;
  } catch {
    return false;
  }
});

/** Replace, drop or add one value somewhere inside `v` (a JSON tree), steered by `choices`. */
function mutate(v: unknown, choices: number[], replacement: unknown): unknown {
  if (choices.length === 0 || typeof v !== 'object' || v === null) return replacement;
  const [c, ...rest] = choices;
  if (Array.isArray(v)) {
    if (v.length === 0) return [replacement];
    const i = c! % (v.length + 1);
    if (i === v.length) return [...v, replacement];
    const copy = [...v];
    copy[i] = mutate(v[i], rest, replacement);
    return copy;
  }
  const keys = Object.keys(v);
  const copy: Record<string, unknown> = { ...(v as Record<string, unknown>) };
  const k = keys[c! % keys.length]!;
  if (rest.length === 0 && c! % 3 === 0) delete copy[k];
  else copy[k] = mutate(copy[k], rest, replacement);
  return copy;
}

/** Our errors are a valid outcome; anything else (a TypeError: exit 1) fails the property. */
function ours(e: unknown): void {
  if (!isSwiftFetchError(e)) throw e;
  expect([2, 5]).toContain(e.exitCode);
}

describe('fuzz: bundle manifests', () => {
  it(`parseManifest: digests and safe paths for every file, or our error (${FUZZ_RUNS} cases)`, () => {
    let accepted = 0;
    fc.assert(
      fc.property(files, fc.array(fc.nat(), { maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), fc.boolean(), (fs, choices, replacement, pristine) => {
        const { manifest } = bundleOf(fs);
        const doc = pristine ? manifest : mutate(manifest, choices, replacement);
        let m;
        try {
          m = parseManifest(JSON.stringify(doc));
        } catch (e) {
          ours(e);
          return;
        }
        accepted++;
        const listed = new Map(m.blobs.map((b) => [b.sha256, b.size]));
        for (const model of m.models) {
          validateListing(model.files.map((f) => f.path));
          for (const f of model.files) {
            expect(f.sha256).toMatch(/^[0-9a-f]{64}$/);
            if (model.hub === 'hf' && !f.lfs) expect(f.gitOid).toMatch(/^[0-9a-f]{40}$/);
            expect(listed.get(f.sha256)).toBe(f.size);
          }
        }
      }),
      fuzzParams(),
    );
    expect(accepted).toBeGreaterThan(FUZZ_RUNS / 4);
  });
});

/** Split `buf` at the given fractions. */
function cut(buf: Buffer, fractions: number[]): Buffer[] {
  const points = [...new Set(fractions.map((f) => Math.floor(f * buf.length)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, buf.length]) {
    if (p > prev) out.push(buf.subarray(prev, p));
    prev = Math.max(prev, p);
  }
  return out;
}

async function pack(entries: Array<{ name: string; type: 'file' | 'directory'; content: Uint8Array; pax?: Record<string, string> }>): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    p.on('data', (c: unknown) => void chunks.push(c as Buffer));
    p.on('end', () => resolve(Buffer.concat(chunks)));
    p.on('error', reject);
  });
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const header = { name: e.name, type: e.type, mode: 0o644, mtime: new Date(0), ...(e.pax ? { pax: e.pax } : {}) };
      if (e.type === 'file') p.entry({ ...header, size: e.content.length }, Buffer.from(e.content), (err) => (err ? reject(err) : resolve()));
      else p.entry(header, (err) => (err ? reject(err) : resolve())).end(undefined);
    });
  }
  p.finalize();
  return done;
}

describe('fuzz: the end of a tar archive', () => {
  const name = fc.oneof(
    fc.stringMatching(/^[a-z0-9]{1,20}$/),
    fc.stringMatching(/^[a-z]{60,90}\/[a-z]{60,90}$/), // too long for the name field: ustar prefix
    fc.stringMatching(/^[a-z]{101,180}$/), // too long either way: a pax header
    fc.constantFrom('ünïcödé.bin', '\u{1F600}/x'), // not ASCII: a pax header
  );
  const entry = fc.record({
    name,
    type: fc.constantFrom('file', 'file', 'file', 'directory') as fc.Arbitrary<'file' | 'directory'>,
    content: fc.oneof(fc.uint8Array({ maxLength: 1500 }), fc.uint8Array({ maxLength: 1500, min: 1 })),
    pax: fc.option(fc.dictionary(fc.constantFrom('comment', 'mtime', 'uname', 'SCHILY.xattr.user.x'), fc.stringMatching(/^[a-z0-9 ]{0,30}$/)), { nil: undefined }),
  });
  // Blocks tar-stream skips as "no header": zero but for the checksum field.
  const checksumOnly = fc.array(fc.uint8Array({ minLength: 8, maxLength: 8, min: 1 }), { minLength: 1, maxLength: 8 }).map((fields) =>
    Buffer.concat(fields.map((f) => {
      const b = Buffer.alloc(512);
      b.set(f, 148);
      return b;
    })),
  );
  const tail = fc.oneof(
    fc.constant(Buffer.alloc(0)),
    fc.nat({ max: 40 }).map((n) => Buffer.alloc(n * 512)),
    fc.uint8Array({ minLength: 1, maxLength: 3000 }).map((u) => Buffer.from(u)),
    checksumOnly,
  );

  it(`ArchiveEnd stops exactly at the marker of any archive tar-stream writes (${FUZZ_RUNS_IO * 3} cases)`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { maxLength: 5 }), tail, fc.boolean(), fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 }), async (entries, after, loose, fractions) => {
        const archive = await pack(entries);
        // The marker itself may be written as blocks that are null to tar-stream but not all zero.
        if (loose) archive.fill(0x37, archive.length - 1024 + 148, archive.length - 1024 + 156).fill(0x31, archive.length - 512 + 148, archive.length - 512 + 156);
        const end = new ArchiveEnd();
        let kept = 0;
        for (const piece of cut(Buffer.concat([archive, after]), fractions)) {
          kept += end.push(piece);
          if (end.ended) break;
        }
        expect(end.ended).toBe(true);
        expect(kept).toBe(archive.length);
        expect(end.length).toBe(archive.length);
      }),
      fuzzParams(FUZZ_RUNS_IO * 3),
    );
  });

  // Archives of files over 8 GiB carry the size in a pax record, and the ustar field may say
  // anything (0 here): the walk must take the pax size, as tar-stream does.
  it(`follows pax size records over the ustar size field (${FUZZ_RUNS_IO} cases)`, async () => {
    // Bytes that are never zero: a data block of zeros would read as a lone null block and hide a
    // walk that went wrong.
    const paxFile = fc.record({ name: fc.stringMatching(/^[a-z]{1,12}$/), content: fc.uint8Array({ minLength: 1, maxLength: 3000, min: 1 }) });
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(paxFile, { minLength: 1, maxLength: 4, selector: (f) => f.name }), tail, async (fs, after) => {
        const archive = await pack(fs.map((f) => ({ name: f.name, type: 'file' as const, content: f.content, pax: { size: String(f.content.length) } })));
        // Where tar-stream finds each entry header: zero its size field and fix its checksum.
        const headers: number[] = [];
        const ex = tar.extract();
        const reading = (async () => {
          for await (const e of ex) {
            headers.push((e as unknown as { offset: number }).offset);
            for await (const _ of e) {
              /* drain */
            }
          }
        })();
        ex.end(archive);
        await reading;
        expect(headers).toHaveLength(fs.length);
        for (const at of headers) {
          archive.write('00000000000\0', at + 124, 'latin1');
          archive.fill(0x20, at + 148, at + 156);
          let sum = 0;
          for (let i = at; i < at + 512; i++) sum += archive[i]!;
          archive.write(`${sum.toString(8).padStart(6, '0')}\0 `, at + 148, 'latin1');
        }
        // Still read as before by tar-stream (the pax size wins)...
        const contents: Buffer[] = [];
        const again = tar.extract();
        const rereading = (async () => {
          for await (const e of again) {
            const parts: Buffer[] = [];
            for await (const c of e) parts.push(c as Buffer);
            contents.push(Buffer.concat(parts));
          }
        })();
        again.end(archive);
        await rereading;
        expect(contents).toEqual(fs.map((f) => Buffer.from(f.content)));
        // ...and its end found where it is.
        const end = new ArchiveEnd();
        end.push(Buffer.concat([archive, after]));
        expect(end.ended).toBe(true);
        expect(end.length).toBe(archive.length);
      }),
      fuzzParams(FUZZ_RUNS_IO),
    );
  });
});

describe('fuzz: reading hostile bundles', () => {
  const damage = fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), xor: fc.integer({ min: 1, max: 255 }) }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }) }),
    fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ maxLength: 4096 }) }),
    fc.record({ kind: fc.constant('zeros' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), blocks: fc.integer({ min: 1, max: 4 }) }),
    fc.constant({ kind: 'none' as const }),
  );

  type Damage = { kind: string; at?: number; xor?: number; bytes?: Uint8Array; blocks?: number };

  function damaged(buf: Buffer, d: Damage): Buffer {
    const out = Buffer.from(buf);
    const at = Math.floor((d.at ?? 0) * buf.length);
    switch (d.kind) {
      case 'flip':
        out[at] = out[at]! ^ d.xor!;
        return out;
      case 'truncate':
        return out.subarray(0, at);
      case 'append':
        return Buffer.concat([out, Buffer.from(d.bytes!)]);
      case 'zeros': {
        const block = Math.floor(at / 512) * 512;
        return Buffer.concat([out.subarray(0, block), Buffer.alloc(d.blocks! * 512), out.subarray(block)]);
      }
      default:
        return out;
    }
  }

  it(`a damaged bundle is refused with our error, or only verified bytes come out (${FUZZ_RUNS_IO} cases)`, async () => {
    await fc.assert(
      fc.asyncProperty(files, fc.array(damage, { minLength: 1, maxLength: 3 }), fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 8 }), async (fs, damages, fractions) => {
        const { manifest, blobs } = bundleOf(fs);
        let buf = await buildTar([{ name: 'swift-fetch-bundle.json', content: JSON.stringify(manifest) }, ...[...blobs].map(([sha, c]) => ({ name: `blobs/sha256/${sha}`, content: Buffer.from(c) }))]);
        for (const d of damages) buf = damaged(buf, d);
        const delivered: Array<{ sha256: string; gitOid?: string; bytes: Buffer }> = [];
        try {
          await readBundle(Readable.from(cut(buf, fractions)), {
            onBlob: async (info, data) => {
              const parts: Buffer[] = [];
              for await (const c of data) parts.push(c);
              delivered.push({ sha256: info.sha256, ...(info.gitOid ? { gitOid: info.gitOid } : {}), bytes: Buffer.concat(parts) });
            },
          });
        } catch (e) {
          ours(e);
          return;
        }
        for (const d of delivered) {
          const h = new BlobHasher(d.bytes.length, d.gitOid !== undefined);
          h.update(d.bytes);
          const got = h.digest();
          expect(got.sha256).toBe(d.sha256);
          if (d.gitOid) expect(got.gitOid).toBe(d.gitOid);
        }
      }),
      fuzzParams(FUZZ_RUNS_IO),
    );
  });
});
