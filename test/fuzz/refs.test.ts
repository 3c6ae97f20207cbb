/**
 * Property: parseRef accepts only references whose parts are safe as store paths, and refuses
 * everything else with a UsageError (exit 2), never another exception. Whatever it accepts
 * prints back (formatRef) to the same reference.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/core/errors.js';
import { formatRef, isSafeRepo, parseRef, repoKey } from '../../src/core/ref.js';
import { FUZZ_RUNS, fuzzParams } from './config.js';

/** Characters that matter to refs and to paths, and a few that never should. */
const hostile = fc.string({
  unit: fc.constantFrom('a', 'Z', '0', '9', '.', '_', '-', '/', '@', ':', '\\', ' ', '\u0000', '\n', '%', '+', '*', 'é', '--', '..', '~'),
  maxLength: 24,
});
// Mostly plausible names (so that the accepting side is reached), sometimes hostile ones.
const plausible = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/);
const piece = fc.oneof({ arbitrary: plausible, weight: 3 }, { arbitrary: hostile, weight: 1 });
const scheme = fc.constantFrom('', 'hf://', 'ms://', 'modelscope://', 'huggingface://', 's3://', 'HF://', 'x://', 'hf:/', 'hf:');
const structured = fc
  .tuple(scheme, piece, piece, fc.option(piece, { nil: undefined }), fc.constantFrom('', ' ', '\t'))
  .map(([s, org, name, rev, pad]) => `${pad}${s}${org}/${name}${rev === undefined ? '' : `@${rev}`}${pad}`);
const refInput = fc.oneof(structured, fc.string({ unit: 'binary', maxLength: 80 }), fc.string({ maxLength: 300 }));

describe('fuzz: model references', () => {
  it(`parseRef: safe or refused with exit 2 (${FUZZ_RUNS} cases)`, () => {
    let accepted = 0;
    fc.assert(
      fc.property(refInput, fc.boolean(), (input, useHf) => {
        let r;
        try {
          r = parseRef(input, useHf ? { USE_HF: '1' } : {});
        } catch (e) {
          expect(e).toBeInstanceOf(UsageError);
          expect((e as UsageError).exitCode).toBe(2);
          return;
        }
        accepted++;
        expect(isSafeRepo(r.hub, r.org, r.name)).toBe(true);
        const key = repoKey(r);
        expect(key).not.toMatch(/[/\\\u0000-\u001f]/);
        expect(['.', '..']).not.toContain(key);
        if (r.hub !== 's3') expect(`${r.org}/${r.name}`).not.toMatch(/--|\.\./);
        expect(parseRef(formatRef(r), {})).toEqual(r);
      }),
      fuzzParams(),
    );
    // The generator reaches the accepting side too (a property that only ever sees refusals proves little).
    expect(accepted).toBeGreaterThan(FUZZ_RUNS / 50);
  });
});
