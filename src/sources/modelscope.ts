import type { Dispatcher } from 'undici';
import { AuthError, NetworkError, NotFoundError } from '../core/errors.js';
import type { FileEntry, Manifest } from '../core/manifest.js';
import { listingTooLarge, MAX_LISTING_ENTRIES, validateListing, validateRepoPath } from '../core/paths.js';
import { isCommitId, repoId, type ModelRef } from '../core/ref.js';
import type { Origin } from '../core/transfer.js';
import { apiGet, parseJson, type ApiResponse } from './http.js';

/**
 * ModelScope answers a repo's whole file list in one body (each entry ~1 KiB with its commit
 * fields): room for the most files a listing may have (core/paths MAX_LISTING_FILES), no more.
 */
export const MAX_MS_LIST_BODY = 128 * 1024 * 1024;
import { encodePath, type Source, type SourceHooks } from './source.js';

export interface MsSettings {
  endpoint: string;
  token: string | undefined;
}

/** MODELSCOPE_ENDPOINT (full URL) > MODELSCOPE_DOMAIN (bare domain, older clients) > modelscope.cn. */
export function msSettings(env: NodeJS.ProcessEnv): MsSettings {
  let endpoint = env.MODELSCOPE_ENDPOINT;
  if (!endpoint && env.MODELSCOPE_DOMAIN) {
    const d = env.MODELSCOPE_DOMAIN.trim();
    endpoint = /^https?:\/\//.test(d) ? d : `https://${d}`;
  }
  return { endpoint: (endpoint || 'https://www.modelscope.cn').replace(/\/+$/, ''), token: env.MODELSCOPE_API_TOKEN || undefined };
}

interface MsEnvelope<T> {
  Code?: number;
  Success?: boolean;
  Message?: string;
  Data?: T;
}
interface MsRevision {
  Revision?: string;
  CommitId?: string;
}
interface MsFile {
  Path?: string;
  Name?: string;
  Type?: string;
  Size?: number;
  Sha256?: string;
  IsLFS?: boolean;
  Revision?: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The files of a ModelScope `repo/files` listing (untrusted JSON): each with a safe path and a
 * valid size, sorted by path, folders skipped; and the first commit id a file names (a fallback
 * for a revision that is neither a branch nor a tag). Throws a SwiftFetchError, never anything
 * else, on the first entry that falls short. Pure.
 */
export function filesOfMsList(raw: unknown, label: string): { files: FileEntry[]; commit: string | undefined } {
  if (!Array.isArray(raw)) throw new NetworkError(`ModelScope's file list of ${label} is not an array`, 'ESF_BAD_RESPONSE');
  if (raw.length > MAX_LISTING_ENTRIES) throw listingTooLarge(`ModelScope's file list of ${label}`, MAX_LISTING_ENTRIES, 'entries');
  const files: FileEntry[] = [];
  let commit: string | undefined;
  for (const item of raw) {
    const f = (typeof item === 'object' && item !== null ? item : {}) as MsFile;
    if (f.Type === 'tree') continue;
    const path = f.Path ?? f.Name;
    if (typeof path !== 'string') throw new NetworkError(`ModelScope lists a file without a path in ${label}`, 'ESF_BAD_RESPONSE');
    if (typeof f.Size !== 'number' || !Number.isSafeInteger(f.Size) || f.Size < 0) {
      throw new NetworkError(`ModelScope lists ${JSON.stringify(path)} without a valid size`, 'ESF_BAD_RESPONSE');
    }
    const entry: FileEntry = { path: validateRepoPath(path), size: f.Size, lfs: f.IsLFS === true };
    if (typeof f.Sha256 === 'string' && /^[0-9a-f]{64}$/i.test(f.Sha256)) entry.sha256 = f.Sha256.toLowerCase();
    files.push(entry);
    if (!commit && typeof f.Revision === 'string' && isCommitId(f.Revision)) commit = f.Revision;
  }
  validateListing(files.map((f) => f.path));
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { files, commit };
}

export class ModelScopeSource implements Source {
  readonly hubName = 'ModelScope';
  readonly tokenVariable = 'MODELSCOPE_API_TOKEN';
  readonly endpoint: string;
  private readonly token: string | undefined;
  private readonly dispatcher: Dispatcher;

  constructor(settings: MsSettings, dispatcher: Dispatcher, private readonly hooks: SourceHooks = {}) {
    this.endpoint = settings.endpoint;
    this.token = settings.token;
    this.dispatcher = dispatcher;
  }

  private authHeaders(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}`, cookie: `m_session_id=${this.token}` } : {};
  }

  private async getData<T>(url: string, ref: ModelRef, what: string, signal?: AbortSignal, maxBytes?: number): Promise<T> {
    const res = await apiGet(url, { dispatcher: this.dispatcher, headers: this.authHeaders(), onRetry: this.hooks.onRetry, signal, ...(maxBytes ? { maxBytes } : {}) });
    if (res.status !== 200) this.fail(res, ref);
    const env = parseJson<MsEnvelope<T> | null>(res, what);
    if (!isObject(env)) throw new NetworkError(`ModelScope answered the ${what} of ms://${repoId(ref)} with JSON that is not an object`, 'ESF_BAD_RESPONSE');
    if ((env.Code !== undefined && env.Code !== 200) || env.Success === false || env.Data === undefined) {
      this.fail(res, ref, typeof env.Message === 'string' ? env.Message : undefined);
    }
    if (!isObject(env.Data)) throw new NetworkError(`ModelScope answered the ${what} of ms://${repoId(ref)} without a Data object`, 'ESF_BAD_RESPONSE');
    return env.Data as T;
  }

  async resolve(ref: ModelRef, signal?: AbortSignal): Promise<Manifest> {
    const id = repoId(ref);
    const base = `${this.endpoint}/api/v1/models/${encodePath(id)}`;
    // Branch or tag → commit. A revision that names no branch or tag may be a commit id itself.
    const revs = await this.getData<{ RevisionMap?: { Branches?: MsRevision[]; Tags?: MsRevision[] } }>(
      `${base}/revisions`, ref, `revisions of ${id}`, signal,
    );
    const map: { Branches?: unknown; Tags?: unknown } = isObject(revs.RevisionMap) ? revs.RevisionMap : {};
    const all = [map.Branches, map.Tags].flatMap((l) => (Array.isArray(l) ? (l as unknown[]).filter(isObject) : [])) as MsRevision[];
    const named = all.find((r) => r.Revision === ref.revision);
    if (!named && !isCommitId(ref.revision)) {
      throw new NotFoundError(`revision ${JSON.stringify(ref.revision)} not found in ms://${id}`, 'ESF_REVISION_NOT_FOUND');
    }
    const listRev = named?.CommitId && isCommitId(named.CommitId) ? named.CommitId : ref.revision;
    const data = await this.getData<{ Files?: unknown }>(
      `${base}/repo/files?Revision=${encodeURIComponent(listRev)}&Recursive=True`, ref, `file list of ${id}`, signal, MAX_MS_LIST_BODY,
    );
    const listed = filesOfMsList(data.Files ?? [], `ms://${id}`);
    const commit = named?.CommitId && isCommitId(named.CommitId) ? named.CommitId : isCommitId(ref.revision) ? ref.revision : listed.commit;
    if (!commit) {
      throw new NetworkError(`ModelScope did not say which commit ${id}@${ref.revision} is`, 'ESF_BAD_RESPONSE');
    }
    return { ref, commit, files: listed.files };
  }

  origin(manifest: Manifest, file: FileEntry): Origin {
    const id = repoId(manifest.ref);
    return {
      url: `${this.endpoint}/api/v1/models/${encodePath(id)}/repo?Revision=${encodeURIComponent(manifest.commit)}&FilePath=${encodeURIComponent(file.path)}`,
      hubHeaders: this.authHeaders(),
    };
  }

  private fail(res: ApiResponse, ref: ModelRef, message?: string): never {
    const id = repoId(ref);
    let text = message;
    if (!text) {
      try {
        text = (JSON.parse(res.body) as MsEnvelope<unknown>).Message;
      } catch {
        text = undefined;
      }
    }
    const detail = text ? ` (${text})` : '';
    if (res.status === 401 || res.status === 403) {
      throw new AuthError(
        this.token
          ? `access to ms://${id} was refused with the token in use${detail}: check MODELSCOPE_API_TOKEN`
          : `ms://${id} needs authentication${detail}: set MODELSCOPE_API_TOKEN`,
        'ESF_GATED',
      );
    }
    if (res.status === 404) {
      const rev = /revision/i.test(text ?? '');
      throw new NotFoundError(
        rev ? `revision ${JSON.stringify(ref.revision)} not found in ms://${id}${detail}` : `model ms://${id} not found${detail}`,
        rev ? 'ESF_REVISION_NOT_FOUND' : 'ESF_REPO_NOT_FOUND',
      );
    }
    throw new NetworkError(`ModelScope answered ${res.status} for ms://${id}${detail}`, 'ESF_HTTP_STATUS');
  }
}
