import { UsageError } from './errors.js';

export type Hub = 'hf' | 'ms';

/** A model reference: which hub, which repo, which revision (not yet pinned to a commit). */
export interface ModelRef {
  hub: Hub;
  org: string;
  name: string;
  /** Branch, tag or commit as the user wrote it, or the hub's default. */
  revision: string;
}

export const DEFAULT_REVISION: Record<Hub, string> = { hf: 'main', ms: 'master' };

// Hub repo names: letters, digits, '-', '_', '.', not starting with '.' or '-', at most 96 chars
// (the Hub's own limit). Anything else would be a path-injection vector in every view.
const REPO_PART = /^(?![.-])[A-Za-z0-9._-]{1,96}$/;
// Git refs are permissive but we pin everything to a commit, so allow what hubs use in practice.
const REVISION = /^(?![./])(?!.*\.\.)(?!.*\/\/)[A-Za-z0-9._\-/]{1,128}(?<![./])$/;

/**
 * The characters a Hub name may have, and so safe as one path component under the store. Names
 * in records written by earlier versions are held to this (they may contain "--"); new refs are
 * held to parseRef's full rule.
 */
export function isSafeRepoPart(s: string): boolean {
  return REPO_PART.test(s);
}

export function isCommitId(rev: string): boolean {
  return /^[0-9a-f]{40}$/.test(rev);
}

/**
 * Parse `hf://ORG/NAME[@REV]`, `ms://…`, `modelscope://…` or a bare `ORG/NAME[@REV]`
 * (ModelScope unless USE_HF is truthy, as in ms-swift).
 */
export function parseRef(input: string, env: NodeJS.ProcessEnv = process.env): ModelRef {
  const raw = input.trim();
  if (raw === '') throw new UsageError('empty model reference', 'ESF_BAD_REF');
  let hub: Hub;
  let rest: string;
  const scheme = /^([a-z]+):\/\/(.*)$/.exec(raw);
  if (scheme) {
    const s = scheme[1]!;
    rest = scheme[2]!;
    if (s === 'hf' || s === 'huggingface') hub = 'hf';
    else if (s === 'ms' || s === 'modelscope') hub = 'ms';
    else throw new UsageError(`invalid model reference ${JSON.stringify(input)}: unknown scheme "${s}://" (use hf:// or ms://)`, 'ESF_BAD_REF');
  } else {
    if (raw.includes(':')) {
      throw new UsageError(`invalid model reference ${JSON.stringify(input)}: expected hf://ORG/NAME, ms://ORG/NAME or ORG/NAME`, 'ESF_BAD_REF');
    }
    hub = isTruthy(env.USE_HF) ? 'hf' : 'ms';
    rest = raw;
  }
  let revision: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    revision = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (revision === '') throw new UsageError(`invalid model reference ${JSON.stringify(input)}: empty revision after "@"`, 'ESF_BAD_REF');
    if (!REVISION.test(revision)) throw new UsageError(`invalid model reference ${JSON.stringify(input)}: bad revision ${JSON.stringify(revision)}`, 'ESF_BAD_REF');
  }
  const parts = rest.split('/');
  if (parts.length !== 2) {
    throw new UsageError(`invalid model reference ${JSON.stringify(input)}: expected exactly ORG/NAME`, 'ESF_BAD_REF');
  }
  const [org, name] = parts as [string, string];
  for (const p of [org, name]) {
    if (!isSafeRepoPart(p)) {
      throw new UsageError(`invalid model reference ${JSON.stringify(input)}: bad name ${JSON.stringify(p)}`, 'ESF_BAD_REF');
    }
    // Refused by the Hub too. In the store, "--" joins org and name (models--ORG--NAME, hub--ORG--NAME):
    // hf://col--a/b and hf://col/a--b would share one cache folder, records and refs.
    if (p.includes('--') || p.includes('..')) {
      throw new UsageError(`invalid model reference ${JSON.stringify(input)}: "--" and ".." are not allowed in a name (${JSON.stringify(p)}), as on the Hub`, 'ESF_BAD_REF');
    }
  }
  return { hub, org, name, revision: revision ?? DEFAULT_REVISION[hub] };
}

export function isTruthy(v: string | undefined): boolean {
  return v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.trim().toLowerCase());
}

export function repoId(ref: Pick<ModelRef, 'org' | 'name'>): string {
  return `${ref.org}/${ref.name}`;
}

export function formatRef(ref: ModelRef): string {
  return `${ref.hub}://${ref.org}/${ref.name}@${ref.revision}`;
}

/** A stable key for one repo on one hub, safe as a single path component. */
export function repoKey(ref: Pick<ModelRef, 'hub' | 'org' | 'name'>): string {
  return `${ref.hub}--${ref.org}--${ref.name}`;
}
