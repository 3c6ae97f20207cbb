/**
 * What the mirror knows about repos: who may read them, which commit a branch or tag names, and
 * each commit's file list.
 *
 * Access is the hub's call, made with the client's own credentials and cached briefly under
 * their hash: a client the hub refuses gets the hub's own answer, even when this node holds the
 * model. When the hub is down, a repo is served only if it is known to be public (learnt from
 * anonymous answers, remembered on node-local disk) or the client's access was confirmed within
 * the cache time; branch names resolve to the commit last seen for them. File lists of a commit
 * never change, so they come from the store's publish record when it is complete, else from the
 * hub (and are kept in memory).
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { FileEntry, Manifest } from '../core/manifest.js';
import { isCommitId, type ModelHub, type ModelRef } from '../core/ref.js';
import { encodePath } from '../sources/source.js';
import { readText, writeFileAtomic } from '../store/fsutil.js';
import type { PublishRecord, Store } from '../store/store.js';
import { ANONYMOUS, type Credentials } from './credentials.js';
import type { ApiResponse, Upstream } from './upstream.js';

export type Access =
  | { kind: 'ok'; commit: string; offline: boolean }
  /** The hub refused (or said not found): relay its answer. */
  | { kind: 'denied'; res: ApiResponse }
  /** The hub is down and this node cannot decide for it. */
  | { kind: 'unavailable'; message: string };

/** A repo the mirror serves: on one of the two hubs (never an s3 bucket). */
export type MirrorRepo = Omit<ModelRef, 'revision'> & { hub: ModelHub };

export interface Pinned {
  manifest: Manifest;
  /** False when only part of the revision is known (hub down, partial record). */
  complete: boolean;
  publishedAt?: string;
}

interface Decision {
  until: number;
  ok: boolean;
  res?: ApiResponse;
}

const MAX_MANIFESTS = 256;
const MAX_DECISIONS = 10_000;

export class Catalog {
  private readonly access = new Map<string, Decision>();
  private readonly revs = new Map<string, { until: number; commit: string }>();
  private readonly manifests = new Map<string, Pinned>();
  private readonly asking = new Map<string, Promise<Access>>();
  private readonly listing = new Map<string, Promise<Manifest>>();
  /** Persisted: repo -> public?, and `repo@rev` -> last commit seen. */
  private known: { public: Record<string, boolean>; refs: Record<string, string> } = { public: {}, refs: {} };
  private saving: NodeJS.Timeout | undefined;
  private readonly file: string;

  constructor(
    private readonly d: { upstream: Upstream; store: Store; stateDir: string; logger: Logger; ttlMs: number },
  ) {
    this.file = join(d.stateDir, 'mirror', 'known.json');
  }

  async load(): Promise<void> {
    try {
      const text = await readText(this.file);
      if (text) this.known = { public: {}, refs: {}, ...(JSON.parse(text) as Partial<typeof this.known>) };
    } catch (e) {
      this.d.logger.warn({ err: (e as Error).message, file: this.file }, 'ignoring unreadable mirror state');
    }
  }

  async flush(): Promise<void> {
    if (this.saving) clearTimeout(this.saving);
    this.saving = undefined;
    await writeFileAtomic(this.file, JSON.stringify(this.known)).catch((e: Error) => this.d.logger.warn({ err: e.message }, 'cannot save mirror state'));
  }

  private save(): void {
    this.saving ??= setTimeout(() => void this.flush(), 1000);
    this.saving.unref();
  }

  isPublic(hub: ModelHub, id: string): boolean | undefined {
    return this.known.public[`${hub}:${id}`];
  }

  /** Branch and tag names whose latest resolution is `commit`. */
  namesFor(hub: ModelHub, id: string, commit: string): string[] {
    const prefix = `${hub}:${id}@`;
    return Object.entries(this.known.refs).filter(([k, c]) => k.startsWith(prefix) && c === commit).map(([k]) => k.slice(prefix.length));
  }

  /** Names this node resolved for a repo (for listings while the hub is down). */
  async knownRevisions(hub: ModelHub, id: string): Promise<Map<string, string>> {
    const prefix = `${hub}:${id}@`;
    const out = new Map(Object.entries(this.known.refs).filter(([k]) => k.startsWith(prefix)).map(([k, c]) => [k.slice(prefix.length), c]));
    for (const rec of await this.records(hub, id)) for (const name of rec.revisions) if (!out.has(name)) out.set(name, rec.commit);
    return out;
  }

  /** Can these credentials read `id`, and which commit is `rev`? Concurrent identical questions share one upstream call. */
  authorize(hub: ModelHub, id: string, rev: string, creds: Credentials, signal?: AbortSignal): Promise<Access> {
    const k = `${hub}:${id}@${rev}:${creds.key}`;
    let p = this.asking.get(k);
    if (!p) {
      p = this.decide(hub, id, rev, creds, signal).finally(() => this.asking.delete(k));
      this.asking.set(k, p);
    }
    return p;
  }

  private async decide(hub: ModelHub, id: string, rev: string, creds: Credentials, signal?: AbortSignal): Promise<Access> {
    const now = Date.now();
    const a = this.access.get(`${hub}:${id}:${creds.key}`);
    if (a && a.until > now) {
      if (!a.ok) return { kind: 'denied', res: a.res! };
      if (isCommitId(rev)) return { kind: 'ok', commit: rev, offline: false };
      const r = this.revs.get(`${hub}:${id}@${rev}`);
      if (r && r.until > now) return { kind: 'ok', commit: r.commit, offline: false };
    }
    const res = await this.d.upstream.get(hub, revisionPath(hub, id, rev), creds, signal);
    if (!res) return this.decideOffline(hub, id, rev, creds);
    return this.learn(hub, id, rev, creds, res);
  }

  /**
   * Take in the hub's answer to a revision (or model info) request made with `creds`: cache the
   * access decision and the commit, and learn whether the repo is public.
   */
  learn(hub: ModelHub, id: string, rev: string, creds: Credentials, res: ApiResponse): Access {
    const repo = `${hub}:${id}`;
    const until = Date.now() + this.d.ttlMs;
    this.prune();
    if (res.status === 401 || res.status === 403) {
      this.access.set(`${repo}:${creds.key}`, { until, ok: false, res });
      if (creds.key === 'anonymous') this.setPublic(repo, false);
      return { kind: 'denied', res };
    }
    if (res.status !== 200) return { kind: 'denied', res };
    const found = hub === 'hf' ? hfCommit(res) : msCommit(res, rev);
    if (found.kind !== 'ok') return found;
    this.access.set(`${repo}:${creds.key}`, { until, ok: true });
    if (creds.key === 'anonymous' || found.isPublic !== undefined) this.setPublic(repo, found.isPublic ?? true);
    if (!isCommitId(rev)) {
      this.revs.set(`${repo}@${rev}`, { until, commit: found.commit });
      if (this.known.refs[`${repo}@${rev}`] !== found.commit) {
        this.known.refs[`${repo}@${rev}`] = found.commit;
        this.save();
      }
    }
    return { kind: 'ok', commit: found.commit, offline: false };
  }

  /** Many clients with many tokens must not grow the caches without bound. */
  private prune(): void {
    if (this.access.size < MAX_DECISIONS && this.revs.size < MAX_DECISIONS) return;
    const now = Date.now();
    for (const [k, v] of this.access) if (v.until <= now) this.access.delete(k);
    for (const [k, v] of this.revs) if (v.until <= now) this.revs.delete(k);
  }

  private setPublic(repo: string, value: boolean): void {
    if (this.known.public[repo] === value) return;
    this.known.public[repo] = value;
    this.save();
  }

  /** The decision while the hub is down: known public, or access confirmed within the cache time. */
  async decideOffline(hub: ModelHub, id: string, rev: string, creds: Credentials): Promise<Access> {
    const a = this.access.get(`${hub}:${id}:${creds.key}`);
    const allowed = (a !== undefined && a.ok && a.until > Date.now()) || this.isPublic(hub, id) === true;
    const hubName = hub === 'hf' ? 'Hugging Face' : 'ModelScope';
    if (!allowed) return { kind: 'unavailable', message: `${hubName} is unreachable and ${id} is not known to be public here: access cannot be checked` };
    const [org, name] = id.split('/') as [string, string];
    const commit = isCommitId(rev) ? rev : (this.known.refs[`${hub}:${id}@${rev}`] ?? (await this.d.store.localCommit({ hub, org, name }, rev)));
    if (!commit) return { kind: 'unavailable', message: `${hubName} is unreachable and this node never resolved ${id}@${rev}` };
    return { kind: 'ok', commit, offline: true };
  }

  /**
   * Ask the hub, anonymously, about repos the store holds that this node has not classified yet
   * (pulled by the daemon, never read through the mirror), so that they can still be served
   * while the hub is down. One request per repo, only while unknown.
   */
  async classifyStored(signal?: AbortSignal): Promise<void> {
    const seen = new Set<string>();
    for (const r of await this.d.store.listRecords()) {
      if (r.hub === 's3') continue;
      const id = `${r.org}/${r.name}`;
      if (seen.has(`${r.hub}:${id}`) || this.isPublic(r.hub, id) !== undefined) continue;
      seen.add(`${r.hub}:${id}`);
      await this.authorize(r.hub, id, r.hub === 'hf' ? 'main' : 'master', ANONYMOUS, signal).catch(() => undefined);
    }
  }

  private async records(hub: ModelHub, id: string): Promise<PublishRecord[]> {
    const [org, name] = id.split('/') as [string, string];
    return (await this.d.store.listRecords()).filter((r) => r.hub === hub && r.org === org && r.name === name);
  }

  /** The file list of a commit: a complete record, memory, the hub, or (hub down) a partial record. */
  async manifest(ref: MirrorRepo, commit: string, creds: Credentials, signal?: AbortSignal): Promise<Pinned> {
    const mk = `${ref.hub}:${ref.org}/${ref.name}@${commit}`;
    const mem = this.manifests.get(mk);
    if (mem?.complete) return mem;
    const rec = await this.d.store.readRecord(ref, commit);
    const fromRecord = rec ? { manifest: recordManifest(ref, rec), complete: rec.complete, publishedAt: rec.publishedAt } : undefined;
    if (fromRecord?.complete) return this.remember(mk, fromRecord);
    try {
      // Clients asking at once (all of them authorized) wait for one listing.
      let listing = this.listing.get(mk);
      if (!listing) {
        listing = this.d.upstream.source(ref.hub, creds).resolve({ ...ref, revision: commit }, signal).finally(() => this.listing.delete(mk));
        this.listing.set(mk, listing);
      }
      return this.remember(mk, { manifest: await listing, complete: true });
    } catch (e) {
      if (fromRecord && (e as { code?: string }).code === 'ESF_NETWORK') return fromRecord;
      throw e;
    }
  }

  private remember(key: string, p: Pinned): Pinned {
    this.manifests.delete(key);
    this.manifests.set(key, p);
    if (this.manifests.size > MAX_MANIFESTS) this.manifests.delete(this.manifests.keys().next().value!);
    return p;
  }
}

function revisionPath(hub: ModelHub, id: string, rev: string): string {
  return hub === 'hf' ? `/api/models/${encodePath(id)}/revision/${encodeURIComponent(rev)}` : `/api/v1/models/${encodePath(id)}/revisions`;
}

type Found = { kind: 'ok'; commit: string; isPublic?: boolean } | { kind: 'denied'; res: ApiResponse };

function json(res: ApiResponse): unknown {
  try {
    return JSON.parse(res.body);
  } catch {
    return undefined;
  }
}

function badGateway(message: string): Found {
  return { kind: 'denied', res: { status: 502, headers: { 'x-error-message': message }, body: JSON.stringify({ error: message }) } };
}

function hfCommit(res: ApiResponse): Found {
  const info = json(res) as { sha?: unknown; private?: unknown; gated?: unknown } | undefined;
  if (!info || typeof info.sha !== 'string' || !isCommitId(info.sha)) return badGateway('the hub answered without a commit id');
  const isPublic = info.private === false && info.gated === false ? true : info.private === true || (info.gated !== undefined && info.gated !== false) ? false : undefined;
  return { kind: 'ok', commit: info.sha, ...(isPublic === undefined ? {} : { isPublic }) };
}

function msCommit(res: ApiResponse, rev: string): Found {
  type Rev = { Revision?: string; CommitId?: string };
  const env = json(res) as { Code?: number; Data?: { RevisionMap?: { Branches?: Rev[]; Tags?: Rev[] } } } | undefined;
  if (!env || (env.Code !== undefined && env.Code !== 200)) return { kind: 'denied', res };
  const all = [...(env.Data?.RevisionMap?.Branches ?? []), ...(env.Data?.RevisionMap?.Tags ?? [])];
  const named = all.find((r) => r.Revision === rev);
  if (named?.CommitId && isCommitId(named.CommitId)) return { kind: 'ok', commit: named.CommitId };
  if (!named && isCommitId(rev)) return { kind: 'ok', commit: rev };
  if (named) return badGateway(`ModelScope did not say which commit ${rev} is`);
  return { kind: 'denied', res: { status: 404, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ Code: 10010205, Success: false, Message: `The model has no revision: ${rev}`, Data: null }) } };
}

function recordManifest(ref: Omit<ModelRef, 'revision'>, rec: PublishRecord): Manifest {
  const files: FileEntry[] = rec.files.map((f) => ({ path: f.path, size: f.size, sha256: f.sha256, lfs: f.lfs, ...(f.gitOid ? { gitOid: f.gitOid } : {}) }));
  return { ref: { ...ref, revision: rec.commit }, commit: rec.commit, files };
}
