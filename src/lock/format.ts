/**
 * The lock file: which commit each model reference meant when it was locked, and the SHA-256 of
 * every selected file at that commit. It is meant to live in version control and in review, so its
 * text is a pure function of its content: models sorted by ref, files by path, keys in one fixed
 * order, two-space JSON, one trailing newline. Nothing in it depends on the clock or the machine
 * except `endpoint` (where the hub was reached; recorded for audits, never compared).
 *
 *   {
 *     "lockfileVersion": 1,
 *     "models": [
 *       { "ref": "hf://Qwen/Qwen2.5-0.5B@main", "hub": "hf", "endpoint": "https://huggingface.co",
 *         "commit": "<40 hex>", "include": ["*.json"],
 *         "files": [{ "path": "config.json", "size": 659, "sha256": "<64 hex>", "gitOid": "<40 hex>" }] }
 *     ]
 *   }
 *
 * A lock is read as untrusted input (it arrives through a ConfigMap, a pull request, a CI job):
 * strictly validated, unknown keys refused, every path held to the same rules as a hub listing.
 */
import { z } from 'zod';
import { UsageError } from '../core/errors.js';
import { validateListing } from '../core/paths.js';
import { formatRef, isCommitId, parseRef, type Hub, type ModelRef } from '../core/ref.js';

export const LOCK_VERSION = 1;
export const DEFAULT_LOCK_FILE = 'swift-fetch.lock';
/** A lock larger than this is refused (a lock of many big repos is a few MiB). */
export const MAX_LOCK_BYTES = 64 * 1024 * 1024;

export interface LockedFile {
  path: string;
  size: number;
  sha256: string;
  /** The git blob id the hub listed (for LFS files on HF: the pointer's), when it listed one. */
  gitOid?: string;
}

export interface LockedModel {
  /** The reference as asked, in canonical form `hub://ORG/NAME@REVISION`: what pulls are matched by. */
  ref: string;
  hub: Hub;
  /** The hub's base URL when locked (credentials stripped). Informational. */
  endpoint: string;
  commit: string;
  /** The --include / --exclude the files were selected with (absent: none). */
  include?: string[];
  exclude?: string[];
  files: LockedFile[];
}

export interface Lock {
  lockfileVersion: typeof LOCK_VERSION;
  models: LockedModel[];
}

const hex = (n: number) => z.string().regex(new RegExp(`^[0-9a-f]{${n}}$`), `expected ${n} lowercase hex digits`);
const globs = z.array(z.string().min(1, 'an empty pattern')).min(1, 'an empty list (leave the key out instead)');

const fileSchema = z.strictObject({
  path: z.string(),
  size: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  sha256: hex(64),
  gitOid: hex(40).optional(),
});

const modelSchema = z.strictObject({
  ref: z.string(),
  hub: z.enum(['hf', 'ms', 's3']),
  endpoint: z.string(),
  commit: hex(40),
  include: globs.optional(),
  exclude: globs.optional(),
  files: z.array(fileSchema).min(1, 'a model with no files'),
});

const lockSchema = z.strictObject({
  lockfileVersion: z.literal(LOCK_VERSION),
  models: z.array(modelSchema),
});

/** Every lock problem is bad input (exit 2), naming the file and the place in it. */
export function badLock(source: string, why: string): UsageError {
  return new UsageError(`invalid lock file ${source}: ${why}`, 'ESF_BAD_LOCK');
}

/** Parse and check a lock file's text completely; `source` names it in messages. */
export function parseLock(text: string, source: string): Lock {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw badLock(source, `not JSON (${(e as Error).message})`);
  }
  const version = (raw as { lockfileVersion?: unknown } | null)?.lockfileVersion;
  if (typeof version === 'number' && version !== LOCK_VERSION) {
    throw badLock(source, `lockfileVersion ${version}; this swift-fetch reads version ${LOCK_VERSION} (written by a newer one?)`);
  }
  const r = lockSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw badLock(source, `${formatIssuePath(issue.path)}: ${issue.message}`);
  }
  const lock = r.data as Lock;
  const refs = new Set<string>();
  for (const [i, m] of lock.models.entries()) {
    const at = `models[${i}] (${m.ref})`;
    let ref: ModelRef;
    try {
      // Canonical refs carry their scheme, so USE_HF cannot change what a lock means.
      ref = parseRef(m.ref, {});
    } catch (e) {
      throw badLock(source, `models[${i}].ref: ${(e as Error).message}`);
    }
    if (formatRef(ref) !== m.ref) throw badLock(source, `${at}: ref is not in canonical form (expected ${formatRef(ref)})`);
    if (ref.hub !== m.hub) throw badLock(source, `${at}: hub is "${m.hub}" but the ref is on "${ref.hub}"`);
    if (refs.has(m.ref)) throw badLock(source, `${at}: listed twice`);
    refs.add(m.ref);
    if (isCommitId(ref.revision) && ref.revision !== m.commit) throw badLock(source, `${at}: the ref names commit ${ref.revision} but commit is ${m.commit}`);
    try {
      validateListing(m.files.map((f) => f.path));
    } catch (e) {
      throw badLock(source, `${at}: ${(e as Error).message}`);
    }
  }
  return lock;
}

function formatIssuePath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out || '(top level)';
}

const byCodePoint = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The lock's text: the same content always gives the same bytes (see the top of this file). */
export function formatLock(lock: Lock): string {
  const models = [...lock.models].sort((a, b) => byCodePoint(a.ref, b.ref)).map((m) => ({
    ref: m.ref,
    hub: m.hub,
    endpoint: m.endpoint,
    commit: m.commit,
    ...(m.include?.length ? { include: [...new Set(m.include)].sort(byCodePoint) } : {}),
    ...(m.exclude?.length ? { exclude: [...new Set(m.exclude)].sort(byCodePoint) } : {}),
    files: [...m.files].sort((a, b) => byCodePoint(a.path, b.path)).map((f) => ({
      path: f.path,
      size: f.size,
      sha256: f.sha256,
      ...(f.gitOid ? { gitOid: f.gitOid } : {}),
    })),
  }));
  return JSON.stringify({ lockfileVersion: LOCK_VERSION, models }, null, 2) + '\n';
}

/**
 * The entry that pins `ref`: the one locked under the same canonical ref, or - for a ref that
 * already names a commit - any entry of the same repo locked at that commit.
 */
export function findPin(lock: Lock, ref: ModelRef): LockedModel | undefined {
  const key = formatRef(ref);
  const exact = lock.models.find((m) => m.ref === key);
  if (exact || !isCommitId(ref.revision)) return exact;
  const repo = formatRef({ ...ref, revision: '' });
  return lock.models.find((m) => m.commit === ref.revision && m.ref.startsWith(repo));
}

/** The model reference a lock entry was locked for. */
export function pinnedRef(m: LockedModel): ModelRef {
  return parseRef(m.ref, {});
}

/** A base URL fit to be written down: no user, password, query or fragment. */
export function publicEndpoint(endpoint: string): string {
  try {
    const u = new URL(endpoint);
    u.username = '';
    u.password = '';
    u.search = '';
    u.hash = '';
    return u.toString().replace(/\/+$/, '');
  } catch {
    return endpoint.replace(/\/\/[^/@]*@/, '//');
  }
}
