import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { repoRoot } from './paths.js';
import { run, type RunOptions, type RunResult } from './spawn.js';

/** The interpreter of the venv with the real hub clients (`<repo>/.venv/bin/python`). */
export function pythonBin(): string {
  return join(repoRoot, '.venv', 'bin', 'python');
}

export const PYTHON_MISSING = `Python venv with the real hub clients not found at ${dirname(dirname(pythonBin()))}: run .ci/setup-python.sh`;

/**
 * Whether tests needing the venv should be skipped. Never in CI: there a missing venv must make
 * the tests fail (use `requirePython()` in `beforeAll`), not vanish.
 */
export function skipWithoutPython(): boolean {
  if (existsSync(pythonBin())) return false;
  if (process.env.CI) return false;
  console.warn(`skipping: ${PYTHON_MISSING}`);
  return true;
}

/** Throws (failing the test) when the venv is missing. */
export function requirePython(): string {
  const bin = pythonBin();
  if (!existsSync(bin)) throw new Error(PYTHON_MISSING);
  return bin;
}

/** Runs a Python snippet with the venv interpreter (`python -c code args...`). */
export function runPython(code: string, args: string[] = [], opts: RunOptions = {}): Promise<RunResult> {
  return run(requirePython(), ['-c', code, ...args], opts);
}

/** Environment that keeps the Python hub clients quiet, offline-safe and away from the user's caches. */
export function pythonEnv(extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    PYTHONUNBUFFERED: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    HF_HUB_DISABLE_TELEMETRY: '1',
    HF_HUB_DISABLE_PROGRESS_BARS: '1',
    HF_HUB_DISABLE_XET: '1',
    HF_HUB_DISABLE_UPDATE_CHECK: '1',
    DO_NOT_TRACK: '1',
    // Never let a developer's real credentials or endpoints leak into a test.
    HF_TOKEN: undefined,
    HUGGING_FACE_HUB_TOKEN: undefined,
    HF_ENDPOINT: undefined,
    MODELSCOPE_API_TOKEN: undefined,
    MODELSCOPE_ENDPOINT: undefined,
    MODELSCOPE_DOMAIN: undefined,
    ...extra,
  };
}
