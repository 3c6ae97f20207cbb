/**
 * One seed and one bounded count for every property in the suite: a CI run is reproducible
 * (a failure prints its seed and path; rerun with the same values), and its cost is fixed.
 * docs/security.md states these numbers; change them together.
 */
import type fc from 'fast-check';

export const FUZZ_SEED = 20_251_201;
/** Cases per property for pure parsers (microseconds each). */
export const FUZZ_RUNS = 2_000;
/** Cases per property that go through a real HTTP server or a real tar stream. */
export const FUZZ_RUNS_IO = 300;

export function fuzzParams<T>(runs = FUZZ_RUNS): fc.Parameters<T> {
  return { seed: FUZZ_SEED, numRuns: runs };
}
