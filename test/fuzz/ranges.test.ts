/**
 * Properties of Range and Content-Range handling: every parser (the peer server's, the mirror's,
 * the transfer engine's) returns either nothing usable or a range inside the blob, in safe
 * integers; the range-set helpers keep their invariants; and a real peer server answers any
 * Range header with the exact bytes asked for or a clean refusal.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import fc from 'fast-check';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRange } from '../../src/mirror/range.js';
import { covers, normalize, parseByteRange, parseWantedRange, subtractRange, type Range } from '../../src/p2p/ranges.js';
import { parseContentRange } from '../../src/transfer/http.js';
import { SwarmNode } from '../p2p/harness.js';
import { makeContent, sha256 } from '../transfer/helpers.js';
import { FUZZ_RUNS, FUZZ_RUNS_IO, fuzzParams } from './config.js';

const num = fc.oneof(fc.nat({ max: 5000 }), fc.constantFrom('9007199254740993', '1'.repeat(40), '00', '-1', ' 5', '1e3', '0x10'));
const rangeHeader = fc.oneof(
  { arbitrary: fc.tuple(fc.constantFrom('bytes=', 'bytes =', 'Bytes=', 'bits=', 'bytes= ', ''), fc.option(num, { nil: '' }), fc.constantFrom('-', '--', ',', ' - '), fc.option(num, { nil: '' }), fc.constantFrom('', ',0-1', ' ')).map((p) => p.join('')), weight: 4 },
  { arbitrary: fc.string({ unit: fc.constantFrom('b', 'y', 't', 'e', 's', '=', '-', ',', '0', '1', '9', ' '), maxLength: 20 }), weight: 1 },
);
const size = fc.oneof(fc.nat({ max: 5000 }), fc.constant(0), fc.constant(1));

function inside(r: { start: number; end: number }, sz: number): void {
  expect(Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end)).toBe(true);
  expect(r.start).toBeGreaterThanOrEqual(0);
  expect(r.end).toBeGreaterThan(r.start);
  expect(r.end).toBeLessThanOrEqual(sz);
}

describe('fuzz: range parsers', () => {
  it(`peer and mirror Range parsers stay inside the blob (${FUZZ_RUNS} cases)`, () => {
    fc.assert(
      fc.property(rangeHeader, size, (h, sz) => {
        const p2p = parseByteRange(h, sz);
        if (typeof p2p === 'object') inside(p2p, sz);
        const wanted = parseWantedRange(h, sz);
        expect(wanted).toEqual(p2p);
        const early = parseWantedRange(h, undefined);
        if (typeof early === 'object') inside(early, Number.MAX_SAFE_INTEGER);
        const mirror = parseRange(h, sz);
        if (typeof mirror === 'object') inside(mirror, sz);
      }),
      fuzzParams(),
    );
  });

  it(`Content-Range: a range inside its total, or nothing (${FUZZ_RUNS} cases)`, () => {
    const cr = fc.tuple(fc.constantFrom('bytes ', 'bytes', 'BYTES ', ''), num, fc.constantFrom('-', ''), num, fc.constantFrom('/', ''), fc.oneof(num, fc.constant('*'))).map((p) => p.join(''));
    fc.assert(
      fc.property(fc.oneof(cr, fc.string({ maxLength: 30 })), (v) => {
        const r = parseContentRange(v);
        if (!r) return;
        inside(r, r.total ?? Number.MAX_SAFE_INTEGER);
      }),
      fuzzParams(),
    );
  });

  it(`range sets: normalize sorts and merges, subtract removes exactly (${FUZZ_RUNS} cases)`, () => {
    const range = fc.tuple(fc.nat({ max: 200 }), fc.nat({ max: 200 })).map(([a, b]) => [Math.min(a, b), Math.max(a, b)] as Range);
    fc.assert(
      fc.property(fc.array(range, { maxLength: 8 }), range, (set, [s, e]) => {
        const n = normalize(set);
        for (let i = 1; i < n.length; i++) if (!(n[i]![0] > n[i - 1]![1])) return false;
        const has = (rs: readonly Range[], x: number) => rs.some(([a, b]) => a <= x && x < b);
        const left = subtractRange(n, s, e);
        for (let x = 0; x <= 200; x++) {
          if (has(n, x) !== has(set, x)) return false;
          if (has(left, x) !== (has(set, x) && !(s <= x && x < e))) return false;
        }
        if (covers(n, s, e)) for (let x = s; x < e; x++) if (!has(set, x)) return false;
        return true;
      }),
      fuzzParams(),
    );
  });
});

describe('fuzz: Range headers against a real peer server', () => {
  const TOKEN = 'fuzz-peer-token';
  const blob = makeContent(4096 + 17, 9);
  const sha = sha256(blob);
  let node: SwarmNode;
  beforeAll(async () => {
    node = await SwarmNode.start({ token: TOKEN });
    await node.join({ static: [] });
    const p = node.store.blobPath(sha);
    await mkdir(dirname(p), { recursive: true });
    await writeFile(p, blob);
  });
  afterAll(async () => node?.close());

  it(`answers the exact bytes, or 416 (${FUZZ_RUNS_IO} cases)`, async () => {
    await fc.assert(
      fc.asyncProperty(rangeHeader, async (h) => {
        const res = await request(`${node.url}/v1/peer/blobs/${sha}/data`, { headers: { authorization: `Bearer ${TOKEN}`, range: h } });
        const body = Buffer.from(await res.body.arrayBuffer());
        const want = parseByteRange(h, blob.length);
        if (typeof want === 'object') {
          expect(res.statusCode).toBe(206);
          expect(res.headers['content-range']).toBe(`bytes ${want.start}-${want.end - 1}/${blob.length}`);
          expect(body.equals(blob.subarray(want.start, want.end))).toBe(true);
        } else {
          expect(res.statusCode).toBe(416);
          expect(res.headers['content-range']).toBe(`bytes */${blob.length}`);
        }
      }),
      fuzzParams(FUZZ_RUNS_IO),
    );
  });
});
