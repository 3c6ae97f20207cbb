import { UsageError } from './errors.js';

/** Where a model comes from: Hugging Face, ModelScope, or an S3-compatible bucket. */
export type Hub = 'hf' | 'ms' | 's3';
/** The two hubs proper (git repos with a hub API); an s3 bucket is a source but not a hub. */
export type ModelHub = Exclude<Hub, 's3'>;

/**
 * A model reference: which hub, which repo, which revision (not yet pinned to a commit).
 * For `s3://BUCKET/PREFIX` the bucket is `org` and the prefix (which may hold "/") is `name`; its
 * revision is `latest` or a revision id that `pull` derived from an earlier listing.
 */
export interface ModelRef {
  hub: Hub;
  org: string;
  name: string;
  /** Branch, tag or commit as the user wrote it, or the hub's default. */
  revision: string;
}

export const DEFAULT_REVISION: Record<Hub, string> = { hf: 'main', ms: 'master', s3: 'latest' };

/** A place in a bucket: `s3://BUCKET/PREFIX` (the prefix without its trailing "/"). */
export interface S3Location {
  bucket: string;
  prefix: string;
}

// S3's bucket naming rules (the strict, DNS-compatible ones every provider accepts).
const BUCKET = /^(?=.{3,63}$)[a-z0-9][a-z0-9.-]*[a-z0-9]$/;
// Prefix segments: the characters model folders use in practice (ms-swift writes
// output/v0-20250101-120000/checkpoint-100). No "@" (it starts a revision), no "+" (it stands for
// "/" in the store's keys), nothing a shell or a URL would mangle; "." and ".." are path tricks.
const PREFIX_PART = /^[A-Za-z0-9._-]{1,128}$/;
const MAX_PREFIX = 200;

/** Parse `s3://BUCKET/PREFIX[/]` (a push destination, a replica, or the body of an s3 model ref). */
export function parseS3Location(input: string, what = 'S3 location'): S3Location {
  const m = /^s3:\/\/([^/]*)\/?(.*)$/.exec(input.trim());
  const bad = (why: string) => new UsageError(`invalid ${what} ${JSON.stringify(input)}: ${why}`, 'ESF_BAD_REF');
  if (!m) throw bad('expected s3://BUCKET/PREFIX');
  const bucket = m[1]!;
  const prefix = m[2]!.replace(/\/+$/, '');
  if (!BUCKET.test(bucket) || bucket.includes('..')) throw bad(`bad bucket name ${JSON.stringify(bucket)} (3-63 lowercase letters, digits, "." and "-")`);
  if (prefix === '') throw bad('expected s3://BUCKET/PREFIX with a non-empty PREFIX');
  if (prefix.length > MAX_PREFIX) throw bad(`prefix longer than ${MAX_PREFIX} characters`);
  for (const part of prefix.split('/')) {
    if (!PREFIX_PART.test(part) || part === '.' || part === '..') throw bad(`bad prefix segment ${JSON.stringify(part)} (letters, digits, ".", "_" and "-" only)`);
  }
  return { bucket, prefix };
}

export function formatS3Location(loc: S3Location): string {
  return `s3://${loc.bucket}/${loc.prefix}`;
}

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

/** Org and name that are safe under the store for this hub (an s3 prefix may hold "/" between safe segments). */
export function isSafeRepo(hub: Hub, org: string, name: string): boolean {
  if (hub !== 's3') return isSafeRepoPart(org) && isSafeRepoPart(name);
  try {
    parseS3Location(`s3://${org}/${name}`);
    return true;
  } catch {
    return false;
  }
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
  const scheme = /^([a-z0-9]+):\/\/(.*)$/.exec(raw);
  if (scheme?.[1] === 's3') return parseS3Ref(input, raw);
  if (scheme) {
    const s = scheme[1]!;
    rest = scheme[2]!;
    if (s === 'hf' || s === 'huggingface') hub = 'hf';
    else if (s === 'ms' || s === 'modelscope') hub = 'ms';
    else throw new UsageError(`invalid model reference ${JSON.stringify(input)}: unknown scheme "${s}://" (use hf://, ms:// or s3://)`, 'ESF_BAD_REF');
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

/** `s3://BUCKET/PREFIX[@REVISION]`: the revision is `latest` or a 40-hex revision id from a listing. */
function parseS3Ref(input: string, raw: string): ModelRef {
  const at = raw.indexOf('@');
  const revision = at >= 0 ? raw.slice(at + 1) : DEFAULT_REVISION.s3;
  if (revision !== DEFAULT_REVISION.s3 && !isCommitId(revision)) {
    throw new UsageError(`invalid model reference ${JSON.stringify(input)}: an s3:// revision is "latest" or the 40-hex revision id a pull printed`, 'ESF_BAD_REF');
  }
  const loc = parseS3Location(at >= 0 ? raw.slice(0, at) : raw, 'model reference');
  return { hub: 's3', org: loc.bucket, name: loc.prefix, revision };
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
  // An S3 prefix may have "/" (never "+"): "+" for "/" keeps the key one path component (and a
  // valid lease name), and unique.
  return `${ref.hub}--${ref.org}--${ref.hub === 's3' ? ref.name.replaceAll('/', '+') : ref.name}`;
}
