/** The CI rule: a missing tool or right fails in CI and skips (with a reason) elsewhere. */
export const inCI = process.env.CI === 'true' || process.env.CI === '1';
