/**
 * Properties of --include/--exclude globs (the agreement with huggingface_hub itself is checked
 * against Python in test/core/select.test.ts): matching never throws and its work is bounded by
 * (name length + 1) x (pattern length + 1) comparisons, whatever the input; on patterns without
 * sets it agrees with a plain regex.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/core/errors.js';
import { fnmatch, MAX_GLOB_LENGTH } from '../../src/core/select.js';
import { FUZZ_RUNS, fuzzParams } from './config.js';

const meta = fc.constantFrom('*', '?', '[', ']', '!', '-', '/', '\\', 'a', 'b', '.', '^', '\u{1F600}');
const pattern = fc.oneof(fc.string({ unit: meta, maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }));
const name = fc.oneof(fc.string({ unit: fc.constantFrom('a', 'b', '/', '.', ']', '-', '\u{1F600}'), maxLength: 200 }), fc.string({ unit: 'grapheme', maxLength: 200 }));

const cps = (s: string) => Array.from(s).length;

describe('fuzz: globs', () => {
  it(`never throws, and work stays within (n+1)(m+1) (${FUZZ_RUNS} cases)`, () => {
    fc.assert(
      fc.property(pattern, name, (p, n) => {
        const { steps } = fnmatch(p).measure(n);
        expect(steps).toBeLessThanOrEqual((cps(n) + 1) * (cps(p) + 1));
      }),
      fuzzParams(),
    );
  });

  it(`agrees with a regex on patterns made of literals, "*" and "?" (${FUZZ_RUNS} cases)`, () => {
    const simple = fc.string({ unit: fc.constantFrom('*', '?', 'a', 'b', '/', '.', '\u{1F600}'), maxLength: 12 });
    const short = fc.string({ unit: fc.constantFrom('a', 'b', '/', '.', '\u{1F600}'), maxLength: 12 });
    fc.assert(
      fc.property(simple, short, (p, n) => {
        const full = p.endsWith('/') ? `${p}*` : p;
        const re = new RegExp(`^${Array.from(full, (c) => (c === '*' ? '[^]*' : c === '?' ? '[^]' : c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'))).join('')}$`, 'u');
        expect(fnmatch(p).test(n)).toBe(re.test(n));
      }),
      fuzzParams(),
    );
  });

  it('a literal name matches itself and only itself; "*" around it matches any path containing it', () => {
    const literal = fc.string({ unit: fc.constantFrom('a', 'b', '/', '.', '-', '_', 'é'), minLength: 1, maxLength: 20 }).filter((s) => !s.endsWith('/'));
    fc.assert(
      fc.property(literal, fc.string({ maxLength: 10 }), fc.string({ maxLength: 10 }), (lit, pre, post) => {
        expect(fnmatch(lit).test(lit)).toBe(true);
        expect(fnmatch(lit).test(`${lit}x`)).toBe(false);
        expect(fnmatch(`*${lit}*`).test(`${pre}${lit}${post}`.replaceAll('\\', '/'))).toBe(true);
      }),
      fuzzParams(),
    );
  });

  it('refuses patterns past the cap with exit 2', () => {
    fc.assert(
      fc.property(fc.integer({ min: MAX_GLOB_LENGTH + 1, max: MAX_GLOB_LENGTH * 4 }), (len) => {
        expect(() => fnmatch('*'.repeat(len))).toThrow(UsageError);
      }),
      fuzzParams(50),
    );
  });
});
