import type { Dispatcher } from 'undici';
import { AuthError, NetworkError, NotFoundError } from '../core/errors.js';
import type { FileEntry, Manifest } from '../core/manifest.js';
import { validateListing } from '../core/paths.js';
import { isCommitId, repoId, type ModelRef } from '../core/ref.js';
import type { Origin } from '../core/transfer.js';
import { apiGet, parseJson, type ApiResponse } from './http.js';
import { encodePath, type Source } from './source.js';

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

export class ModelScopeSource implements Source {
  readonly hubName = 'ModelScope';
  readonly tokenVariable = 'MODELSCOPE_API_TOKEN';
  readonly endpoint: string;
  private readonly token: string | undefined;
  private readonly dispatcher: Dispatcher;

  constructor(settings: MsSettings, dispatcher: Dispatcher) {
    this.endpoint = settings.endpoint;
    this.token = settings.token;
    this.dispatcher = dispatcher;
  }

  private authHeaders(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}`, cookie: `m_session_id=${this.token}` } : {};
  }

  private async getData<T>(url: string, ref: ModelRef, what: string, signal?: AbortSignal): Promise<T> {
    const res = await apiGet(url, { dispatcher: this.dispatcher, headers: this.authHeaders(), signal });
    if (res.status !== 200) this.fail(res, ref);
    const env = parseJson<MsEnvelope<T>>(res, what);
    if ((env.Code !== undefined && env.Code !== 200) || env.Success === false || env.Data === undefined) {
      this.fail(res, ref, env.Message);
    }
    return env.Data as T;
  }

  async resolve(ref: ModelRef, signal?: AbortSignal): Promise<Manifest> {
    const id = repoId(ref);
    const base = `${this.endpoint}/api/v1/models/${encodePath(id)}`;
    // Branch or tag → commit. A revision that names no branch or tag may be a commit id itself.
    const revs = await this.getData<{ RevisionMap?: { Branches?: MsRevision[]; Tags?: MsRevision[] } }>(
      `${base}/revisions`, ref, `revisions of ${id}`, signal,
    );
    const all = [...(revs.RevisionMap?.Branches ?? []), ...(revs.RevisionMap?.Tags ?? [])];
    const named = all.find((r) => r.Revision === ref.revision);
    if (!named && !isCommitId(ref.revision)) {
      throw new NotFoundError(`revision ${JSON.stringify(ref.revision)} not found in ms://${id}`, 'ESF_REVISION_NOT_FOUND');
    }
    const listRev = named?.CommitId && isCommitId(named.CommitId) ? named.CommitId : ref.revision;
    const data = await this.getData<{ Files?: MsFile[] }>(
      `${base}/repo/files?Revision=${encodeURIComponent(listRev)}&Recursive=True`, ref, `file list of ${id}`, signal,
    );
    const raw = data.Files ?? [];
    const files: FileEntry[] = [];
    let commit = named?.CommitId && isCommitId(named.CommitId) ? named.CommitId : isCommitId(ref.revision) ? ref.revision : undefined;
    for (const f of raw) {
      if (f.Type === 'tree') continue;
      const path = f.Path ?? f.Name;
      if (typeof path !== 'string') throw new NetworkError(`ModelScope lists a file without a path in ms://${id}`, 'ESF_BAD_RESPONSE');
      if (typeof f.Size !== 'number' || !Number.isSafeInteger(f.Size) || f.Size < 0) {
        throw new NetworkError(`ModelScope lists ${JSON.stringify(path)} without a valid size`, 'ESF_BAD_RESPONSE');
      }
      const entry: FileEntry = { path, size: f.Size, lfs: Boolean(f.IsLFS) };
      if (typeof f.Sha256 === 'string' && /^[0-9a-f]{64}$/i.test(f.Sha256)) entry.sha256 = f.Sha256.toLowerCase();
      files.push(entry);
      if (!commit && typeof f.Revision === 'string' && isCommitId(f.Revision)) commit = f.Revision;
    }
    validateListing(files.map((f) => f.path));
    if (!commit) {
      throw new NetworkError(`ModelScope did not say which commit ${id}@${ref.revision} is`, 'ESF_BAD_RESPONSE');
    }
    files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return { ref, commit, files };
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
