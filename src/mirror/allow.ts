/**
 * `mirror.allow`: which repos the mirror serves, as globs over `hub://ORG/NAME` with Python's
 * fnmatch rules (as --include uses): `hf://Qwen/*`, `ms://*`, or `Qwen/*` for both hubs.
 * Pure: no I/O.
 */
import { UsageError } from '../core/errors.js';
import type { ModelHub } from '../core/ref.js';
import { fnmatch } from '../core/select.js';

const SCHEMES: Record<string, ModelHub> = { hf: 'hf', huggingface: 'hf', ms: 'ms', modelscope: 'ms' };

/** Check one pattern; returns it normalised (`modelscope://` → `ms://`). UsageError when it cannot match any repo. */
export function normalizeAllowGlob(glob: string): string {
  const m = /^([^:/]+):\/\/(.*)$/.exec(glob.trim());
  const hub = m ? SCHEMES[m[1]!] : undefined;
  if (m && !hub) throw new UsageError(`mirror.allow: unknown scheme in ${JSON.stringify(glob)} (use hf://, ms:// or no scheme)`);
  const rest = m ? m[2]! : glob.trim();
  if (rest === '' || rest.includes('@')) throw new UsageError(`mirror.allow: ${JSON.stringify(glob)} must name repos as ORG/NAME globs without a revision, e.g. "hf://Qwen/*"`);
  return hub ? `${hub}://${rest}` : rest;
}

/** A predicate over (hub, "org/name"); no globs at all means every repo. */
export function allowMatcher(globs: readonly string[] | undefined): (hub: ModelHub, repo: string) => boolean {
  if (!globs) return () => true;
  const rules = globs.map(normalizeAllowGlob).map((g) => {
    const m = /^(hf|ms):\/\/(.*)$/.exec(g);
    return { hub: m ? (m[1] as ModelHub) : undefined, re: fnmatch(m ? m[2]! : g) };
  });
  return (hub, repo) => rules.some((r) => (r.hub === undefined || r.hub === hub) && r.re.test(repo));
}
