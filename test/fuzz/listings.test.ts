/**
 * Properties of listings, the untrusted input every pull starts from: validateListing lets
 * through only paths that stay inside the folder they are joined to, and the Hugging Face and
 * ModelScope listing parsers turn any JSON whatsoever into either a clean file list or one of our
 * errors (never a TypeError, which would be exit 1).
 */
import { resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isSwiftFetchError } from '../../src/core/errors.js';
import type { FileEntry } from '../../src/core/manifest.js';
import { validateListing } from '../../src/core/paths.js';
import { filesOfTree } from '../../src/sources/huggingface.js';
import { filesOfMsList } from '../../src/sources/modelscope.js';
import { FUZZ_RUNS, fuzzParams } from './config.js';

const ROOT = '/store/models/org/name';

const segment = fc.oneof(
  { arbitrary: fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/), weight: 4 },
  { arbitrary: fc.constantFrom('.', '..', '', '...', ' ', 'C:', '\u0000', '\u001f', 'a\\..\\b', '\u{1F600}', 'x'.repeat(256)), weight: 1 },
);
const path = fc.oneof(
  { arbitrary: fc.array(segment, { minLength: 1, maxLength: 5 }).map((s) => s.join('/')), weight: 4 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 1 },
  { arbitrary: fc.tuple(fc.constantFrom('/', '//', './', '../', 'a/../'), fc.stringMatching(/^[a-z]{1,5}$/)).map(([a, b]) => a + b), weight: 1 },
);

/** A listed file is safe when joining it under ROOT cannot leave ROOT, and nothing else is needed to know that. */
function staysInside(p: string): boolean {
  const abs = resolve(ROOT, p);
  return abs.startsWith(`${ROOT}/`) && !p.split('/').some((c) => c === '..' || c === '.' || c === '') && !p.includes('\\') && !/[\u0000-\u001f]/.test(p);
}

function checkFiles(files: FileEntry[]): void {
  const paths = files.map((f) => f.path);
  expect(new Set(paths).size).toBe(paths.length);
  expect([...paths].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))).toEqual(paths);
  for (const f of files) {
    expect(staysInside(f.path)).toBe(true);
    expect(Number.isSafeInteger(f.size) && f.size >= 0).toBe(true);
    if (f.sha256 !== undefined) expect(f.sha256).toMatch(/^[0-9a-f]{64}$/);
    if (f.gitOid !== undefined) expect(f.gitOid).toMatch(/^[0-9a-f]{40}$/);
    // No file is also a folder of another.
    for (const q of paths) expect(q.startsWith(`${f.path}/`)).toBe(false);
  }
}

const hex = (n: number) => fc.stringMatching(new RegExp(`^[0-9a-f]{${n}}$`));
const size = fc.oneof(fc.nat(), fc.constantFrom(-1, 1.5, 2 ** 53, Number.NaN, '12', null));
const treeItem = fc.oneof(
  {
    arbitrary: fc.record(
      {
        type: fc.constantFrom('file', 'directory', 'FILE', 3),
        path,
        size,
        oid: fc.oneof(hex(40), fc.string()),
        lfs: fc.oneof(fc.constant(null), fc.record({ oid: fc.oneof(hex(64), fc.string()), size }, { requiredKeys: [] }), fc.string()),
      },
      { requiredKeys: ['type'] },
    ),
    weight: 4,
  },
  { arbitrary: fc.jsonValue(), weight: 1 },
);
const msItem = fc.oneof(
  {
    arbitrary: fc.record(
      {
        Path: fc.oneof(path, fc.integer()),
        Name: path,
        Type: fc.constantFrom('blob', 'tree', 'x'),
        Size: size,
        Sha256: fc.oneof(hex(64), hex(64).map((h) => h.toUpperCase()), fc.string()),
        IsLFS: fc.oneof(fc.boolean(), fc.string()),
        Revision: fc.oneof(hex(40), fc.string()),
      },
      { requiredKeys: [] },
    ),
    weight: 4,
  },
  { arbitrary: fc.jsonValue(), weight: 1 },
);

/** Runs `parse`; our errors are a valid outcome, anything else fails the property. Returns the files or undefined. */
function outcome<T>(parse: () => T): T | undefined {
  try {
    return parse();
  } catch (e) {
    if (!isSwiftFetchError(e)) throw e;
    expect([2, 7]).toContain(e.exitCode); // a hostile listing (2) or a broken hub answer (7)
    return undefined;
  }
}

describe('fuzz: listings', () => {
  it(`validateListing passes only paths that stay inside (${FUZZ_RUNS} cases)`, () => {
    let passed = 0;
    fc.assert(
      fc.property(fc.array(path, { maxLength: 8 }), (paths) => {
        const ok = outcome(() => (validateListing(paths), true));
        if (!ok) return; // refused, with one of our errors: always allowed
        passed++;
        for (const p of paths) expect(staysInside(p)).toBe(true);
      }),
      fuzzParams(),
    );
    expect(passed).toBeGreaterThan(FUZZ_RUNS / 20);
  });

  it(`Hugging Face tree pages: a clean file list or our error (${FUZZ_RUNS} cases)`, () => {
    let listed = 0;
    fc.assert(
      fc.property(fc.array(treeItem, { maxLength: 8 }), (items) => {
        const files = outcome(() => filesOfTree(items));
        if (!files) return;
        listed += files.length;
        checkFiles(files);
        for (const f of files) expect(f.sha256 !== undefined || f.gitOid !== undefined).toBe(true);
      }),
      fuzzParams(),
    );
    expect(listed).toBeGreaterThan(0);
  });

  it(`ModelScope file lists: a clean file list or our error (${FUZZ_RUNS} cases)`, () => {
    let listed = 0;
    fc.assert(
      fc.property(fc.oneof({ arbitrary: fc.array(msItem, { maxLength: 8 }), weight: 5 }, { arbitrary: fc.jsonValue(), weight: 1 }), (raw) => {
        const out = outcome(() => filesOfMsList(raw, 'ms://o/n'));
        if (!out) return;
        listed += out.files.length;
        checkFiles(out.files);
        if (out.commit !== undefined) expect(out.commit).toMatch(/^[0-9a-f]{40}$/);
      }),
      fuzzParams(),
    );
    expect(listed).toBeGreaterThan(0);
  });
});
