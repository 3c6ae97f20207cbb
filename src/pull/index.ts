/**
 * A pull: resolve a ref to a commit, get every selected file into the store verified, publish
 * every view. Several processes (on several nodes) pulling the same revision into one store
 * coordinate through a lease file: one downloads, the others wait for its publish and return.
 */
import { rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import type { Logger } from 'pino';
import { IntegrityError, NetworkError, NotFoundError, StorageError } from '../core/errors.js';
import { totalBytes, type FileEntry, type Manifest } from '../core/manifest.js';
import { formatRef, parseRef, repoKey, type ModelRef } from '../core/ref.js';
import { selectFiles } from '../core/select.js';
import { sleep } from '../core/sleep.js';
import { publicEndpoint } from '../lock/format.js';
import { pinnedFiles } from '../lock/pin.js';
import { pinFor, type Pinned } from '../lock/pins.js';
import { sourceFor, type Source } from '../sources/index.js';
import { readLease, tryAcquireLease, type Lease } from '../store/lease.js';
import { Store, type PublishRecord } from '../store/store.js';
import { proxyAwareDispatcher } from '../transfer/index.js';
import { fetchMissing } from './fetch.js';
import { PullProvenance } from './provenance.js';
import type { PullOptions, PullResult } from './types.js';

export type { PullEvent, PullOptions, PullResult } from './types.js';

/** What a pull works on once the ref is resolved. */
interface Revision {
  ref: ModelRef;
  store: Store;
  manifest: Manifest;
  /** The selected files (all of them unless --include/--exclude narrowed it). */
  files: FileEntry[];
  complete: boolean;
  log: Logger | undefined;
  provenance: PullProvenance;
  /** The lock entry this pull obeys, if any. */
  pinned: Pinned | undefined;
}

/** Pull one ref into `opts.store`: the revision's selected files, verified, in every view. */
export async function pullModel(refOrString: ModelRef | string, opts: PullOptions): Promise<PullResult> {
  const env = opts.env ?? process.env;
  const ref = typeof refOrString === 'string' ? parseRef(refOrString, env) : refOrString;
  const log = opts.logger?.child({ module: 'pull', ref: formatRef(ref) });
  // Before any network: a bad lock, or a ref that locked mode refuses, is bad input (exit 2).
  const pinned = opts.lock ? await pinFor(ref, opts.lock) : undefined;
  const store = new Store(opts.store);
  // Hub API calls (listings): a few connections, through the same proxies as the downloads.
  const dispatcher = proxyAwareDispatcher(env, { connections: 4, headersTimeout: 60_000, bodyTimeout: 60_000 });
  try {
    // The hub's API calls retry too: say so, a person watching a slow or down hub sees why it waits.
    const source = await sourceFor(ref.hub, env, dispatcher, {
      onRetry: (r) => opts.onEvent?.({ type: 'retry', file: 'the hub API', attempt: r.attempt, of: r.of, delayMs: r.delayMs, reason: r.reason }),
    });
    const resolved = await resolveOrOffline(source, ref, store, opts, log, pinned);
    if ('offline' in resolved) return done(ref, resolved.offline, 0, true, opts);
    const { manifest } = resolved;
    // Pinned: the lock's files, each expected to have the lock's SHA-256 (checked against the listing first).
    const files = pinned ? pinnedFiles(pinned.pin, manifest, pinned.file, opts.include, opts.exclude) : selectFiles(manifest.files, opts.include, opts.exclude);
    if (files.length === 0 && manifest.files.length > 0) throw nothingSelected(ref, manifest, opts);
    // Only now, with a validated listing and a selection in hand, touch the store.
    await store.init();
    if (files.length >= MANY_FILES) favourMemory();
    const provenance = new PullProvenance({
      hub: ref.hub, commit: manifest.commit, endpoint: publicEndpoint(source.endpoint),
      ...(pinned ? { lock: { file: pinned.loaded.file, sha256: pinned.loaded.sha256 } } : {}),
    });
    const rev: Revision = { ref, store, manifest, files, complete: files.length === manifest.files.length, log, provenance, pinned };
    const bytesTotal = totalBytes(files);
    opts.onEvent?.({ type: 'resolved', ref: formatRef(ref), commit: manifest.commit, files: files.length, bytesTotal });
    log?.info({ commit: manifest.commit, files: files.length, bytes: bytesTotal }, 'resolved');
    return await downloadOnce(rev, source, opts);
  } finally {
    await dispatcher.close().catch(() => undefined);
  }
}

/** A revision with this many files makes V8 trade a little CPU for a smaller heap (below). */
const MANY_FILES = 2_000;

/**
 * Thousands of small files make a few KiB of short-lived garbage each (requests, events, claims)
 * that V8 lets pile up: a 20,000-file pull peaked at 320 MB RSS with a live heap of ~75 MB. With
 * --optimize-for-size V8 collects sooner (peak ~200 MB, same time: docs/benchmarks.md). It costs
 * ~10 % more CPU on the bulk path, so it is switched on only for such revisions (for the rest of
 * the process: V8 flags are process-wide).
 */
function favourMemory(): void {
  setFlagsFromString('--optimize-for-size');
}

/** --include/--exclude left nothing: publishing an empty revision would be a silent success. */
function nothingSelected(ref: ModelRef, manifest: Manifest, opts: PullOptions): NotFoundError {
  const said = [
    ...(opts.include?.length ? [`--include ${opts.include.map((p) => JSON.stringify(p)).join(' ')}`] : []),
    ...(opts.exclude?.length ? [`--exclude ${opts.exclude.map((p) => JSON.stringify(p)).join(' ')}`] : []),
  ].join(' ');
  return new NotFoundError(`no file of ${formatRef(ref)} (${manifest.files.length} files at ${manifest.commit.slice(0, 12)}) is selected by ${said}`, 'ESF_NO_FILE_SELECTED');
}

/**
 * The hub's listing; offline, the revision the store already holds, if it holds one. A pinned ref
 * is listed at its locked commit, offline taken from the store's record of that commit (checked
 * against the lock like a listing); its manifest keeps the revision as asked, so the publish
 * names it (refs/main then points at the locked commit).
 */
async function resolveOrOffline(
  source: Source, ref: ModelRef, store: Store, opts: PullOptions, log: Logger | undefined, pinned: Pinned | undefined,
): Promise<{ manifest: Manifest } | { offline: PublishRecord }> {
  try {
    opts.onEvent?.({ type: 'resolving', ref: formatRef(ref) });
    const listing = await source.resolve(pinned ? { ...ref, revision: pinned.pin.commit } : ref, opts.signal);
    return { manifest: { ...listing, ref } };
  } catch (e) {
    if (e instanceof NetworkError && e.code === 'ESF_NETWORK' && pinned) {
      const rec = await store.replaceableRecord(ref, pinned.pin.commit);
      if (rec) {
        log?.warn({ err: e.message, commit: rec.commit }, 'hub unreachable; using the locked commit already in the store');
        return { manifest: { ref, commit: rec.commit, files: rec.files.map(({ path, size, sha256, gitOid, lfs }) => ({ path, size, sha256, lfs, ...(gitOid ? { gitOid } : {}) })) } };
      }
    } else if (e instanceof NetworkError && e.code === 'ESF_NETWORK') {
      const commit = await store.localCommit(ref, ref.revision);
      const record = commit ? await store.replaceableRecord(ref, commit) : undefined;
      if (record) {
        log?.warn({ err: e.message }, 'hub unreachable; using the revision already in the store');
        return { offline: record };
      }
    }
    throw e;
  }
}

/**
 * Publish the revision from the store when it holds it; otherwise take the revision's lease (or
 * wait for whoever holds it to publish), fetch what is missing and publish.
 */
async function downloadOnce(rev: Revision, source: Source, opts: PullOptions): Promise<PullResult> {
  const { ref, store, manifest } = rev;
  const holder = opts.holder ?? `${hostname()}:${process.pid}`;
  // Losing a lease (a stalled heartbeat, a store we cannot write) means another process may be
  // writing the same files now: stop, rather than race it.
  const lost = new AbortController();
  const onLost = () => {
    rev.log?.warn('download lease lost; stopping so the process that took it over can finish');
    lost.abort(new StorageError(`lost the download lease for ${formatRef(ref)} in ${store.leaseDir}; another process took it over`, 'ESF_LEASE_LOST'));
  };
  const claim = await revisionLease(rev, holder, onLost, opts);
  if ('published' in claim) return done(ref, claim.published, 0, true, opts);
  const { lease } = claim;
  const signal = opts.signal ? AbortSignal.any([opts.signal, lost.signal]) : lost.signal;
  // Every blob this revision uses gets a second link here until it is published, so no sweep
  // (GC evicting an older revision that shared it) can take it away mid-pull. If we die, GC sees
  // the folder's maker is gone and removes it (store/work.ts).
  let pinDir: string | undefined;
  let replica: Awaited<ReturnType<typeof import('../s3/replica.js').findReplicaCopies>>;
  try {
    pinDir = await store.makeWorkDir('pin', lease.name);
    // Bucket replicas of the hub go after peers (nearer) and before the hub itself.
    if (opts.replicas?.length && ref.hub !== 's3') {
      const { findReplicaCopies } = await import('../s3/replica.js');
      replica = await findReplicaCopies(opts.replicas, manifest, rev.files, { env: opts.env ?? process.env, signal, logger: opts.logger, connections: opts.connections });
    }
    const hooks = replica ? { ...opts.engineHooks, chunkSources: [...(opts.engineHooks?.chunkSources ?? []), replica] } : opts.engineHooks;
    const pull = { ...opts, engineHooks: rev.provenance.wrap(hooks) };
    const { shas, downloaded } = await fetchMissing({ store, source, manifest, files: rev.files, pinDir, lease, signal, pull }).catch((e: unknown) => {
      throw lost.signal.aborted ? lost.signal.reason : lockedIntegrity(rev, e);
    });
    signal.throwIfAborted();
    opts.onEvent?.({ type: 'verifying' });
    const at = new Date().toISOString();
    const rec = await store.publish({
      key: ref,
      commit: manifest.commit,
      revision: ref.revision,
      files: rev.files.map((f) => ({ ...f, sha256: shas.get(f.path)!, verified: Boolean(f.sha256 || f.gitOid), from: rev.provenance.of(f, at) })),
      complete: rev.complete,
    });
    const unverified = rec.files.filter((f) => !f.verified).map((f) => f.path);
    if (unverified.length > 0) rev.log?.warn({ files: unverified }, 'nothing upstream vouched for these files (no hash from the hub, no checksum or manifest in the bucket): their SHA-256 was computed here and recorded, unverified');
    return done(ref, rec, downloaded, false, opts);
  } finally {
    await replica?.close();
    if (pinDir) await rm(pinDir, { recursive: true, force: true });
    await lease.release();
  }
}

/**
 * The revision's download lease, or - when the store holds every selected file already (now, or
 * once the process holding the lease has published) - the record it republished.
 */
async function revisionLease(rev: Revision, holder: string, onLost: () => void, opts: PullOptions): Promise<{ lease: Lease } | { published: PublishRecord }> {
  const { ref, store, manifest } = rev;
  const leaseName = `${repoKey(ref)}@${manifest.commit}`;
  for (;;) {
    opts.signal?.throwIfAborted();
    const rec = await store.replaceableRecord(ref, manifest.commit);
    if (recordHolds(rec, rev.files)) {
      // Record the revision name too (a new branch may point at a commit we already have).
      return { published: await publishFrom(rev, rec!) };
    }
    const lease = await tryAcquireLease(store.leaseDir, leaseName, { holder, ttlMs: opts.leaseTtlMs, onLost });
    if (lease) return { lease };
    const info = await readLease(store.leaseDir, leaseName);
    opts.onEvent?.({ type: 'waiting', holder: info?.holder ?? 'unknown' });
    await sleep(opts.pollMs ?? 500, opts.signal);
  }
}

/**
 * Files of `record` hold every selected file of the manifest, provably with the content the hub
 * lists now: the same SHA-256 where the hub gives one, and the same git oid where that is the
 * only hash it gives (small HF files). A record without that oid - e.g. from a bundle that left
 * it out - proves nothing about such a file, so the pull checks it (fetchMissing finds the blob
 * by its verified git-oid alias, or fetches and verifies it).
 */
function recordHolds(record: PublishRecord | undefined, files: readonly FileEntry[]): boolean {
  if (!record) return false;
  const have = new Map(record.files.map((f) => [f.path, f]));
  return files.every((f) => {
    const h = have.get(f.path);
    if (h === undefined || h.size !== f.size) return false;
    if (f.sha256 && h.sha256 !== f.sha256) return false;
    // An oid the record names must agree; where it is the hub's only hash, the record must name it.
    if (f.gitOid && h.gitOid !== f.gitOid && (h.gitOid !== undefined || !f.sha256)) return false;
    return true;
  });
}

async function publishFrom(rev: Revision, rec: PublishRecord): Promise<PublishRecord> {
  const byPath = new Map(rec.files.map((f) => [f.path, f]));
  const at = new Date().toISOString();
  return rev.store.publish({
    key: rev.manifest.ref,
    commit: rev.manifest.commit,
    revision: rev.manifest.ref.revision,
    files: rev.files.map((f) => {
      const held = byPath.get(f.path)!;
      return { ...f, sha256: held.sha256, verified: held.verified, from: rev.provenance.reused(held.from, f, at) };
    }),
    complete: rev.complete,
  });
}

/** A pinned pull's integrity failure says it is the lock the bytes disagree with, and which file. */
function lockedIntegrity(rev: Revision, e: unknown): unknown {
  if (!rev.pinned || !(e instanceof IntegrityError)) return e;
  const { pin, file } = rev.pinned;
  const what = e.path ? `${e.path}: ` : '';
  return new IntegrityError(`${pin.ref} (${pin.commit.slice(0, 12)}) differs from the lock ${file}: ${what}the bytes served hash to ${e.found}, the lock says ${e.expected}`, {
    expected: e.expected, found: e.found, ...(e.path ? { path: e.path } : {}),
  });
}

function done(ref: ModelRef, rec: PublishRecord, bytesDownloaded: number, alreadyComplete: boolean, opts: PullOptions): PullResult {
  opts.onEvent?.({ type: 'published', path: rec.paths.plain, commit: rec.commit });
  return { ref, commit: rec.commit, path: rec.paths.plain, record: rec, bytesDownloaded, alreadyComplete };
}
