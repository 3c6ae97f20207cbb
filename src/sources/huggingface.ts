import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Dispatcher } from 'undici';
import { AuthError, NetworkError, NotFoundError } from '../core/errors.js';
import type { FileEntry, Manifest } from '../core/manifest.js';
import { headerValue } from '../core/headers.js';
import { listingTooLarge, MAX_LISTING_ENTRIES, MAX_LISTING_FILES, validateListing, validateRepoPath } from '../core/paths.js';
import { isCommitId, repoId, type ModelRef } from '../core/ref.js';
import type { Origin } from '../core/transfer.js';
import { apiGet, parseJson, type ApiResponse } from './http.js';
import { encodePath, type Source, type SourceHooks } from './source.js';

export interface HfSettings {
  endpoint: string;
  token: string | undefined;
}

/** Endpoint and token exactly as huggingface_hub finds them. */
export function hfSettings(env: NodeJS.ProcessEnv): HfSettings {
  const endpoint = (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, '');
  let token = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN || undefined;
  if (!token) {
    const hfHome = env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface');
    const tokenPath = env.HF_TOKEN_PATH || join(hfHome, 'token');
    try {
      token = readFileSync(tokenPath, 'utf8').trim() || undefined;
    } catch {
      token = undefined;
    }
  }
  return { endpoint, token };
}

/**
 * Tree pages followed at most: the Hub sends 1,000 entries a page, so 100,000 files fit in a
 * tenth of this even at 50 a page. A page that adds nothing but links on is refused at once.
 */
export const MAX_TREE_PAGES = 2_000;
/** A `next` URL longer than this is not a cursor. */
const MAX_NEXT_URL = 8 * 1024;

interface TreeEntry {
  type: 'file' | 'directory';
  path: string;
  size?: number;
  oid?: string;
  lfs?: { oid?: string; sha256?: string; size?: number };
}

export class HuggingFaceSource implements Source {
  readonly hubName = 'Hugging Face';
  readonly tokenVariable = 'HF_TOKEN';
  readonly endpoint: string;
  private readonly token: string | undefined;
  private readonly dispatcher: Dispatcher;

  constructor(settings: HfSettings, dispatcher: Dispatcher, private readonly hooks: SourceHooks = {}) {
    this.endpoint = settings.endpoint;
    this.token = settings.token;
    this.dispatcher = dispatcher;
  }

  private authHeaders(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  async resolve(ref: ModelRef, signal?: AbortSignal): Promise<Manifest> {
    const id = repoId(ref);
    const base = `${this.endpoint}/api/models/${encodePath(id)}`;
    const revUrl = `${base}/revision/${encodeURIComponent(ref.revision)}`;
    const rev = await apiGet(revUrl, { dispatcher: this.dispatcher, headers: this.authHeaders(), onRetry: this.hooks.onRetry, signal });
    if (rev.status !== 200) this.fail(rev, ref);
    const info = parseJson<{ sha?: unknown } | null>(rev, `revision ${ref.revision} of ${id}`);
    const commit = typeof info?.sha === 'string' ? info.sha : '';
    if (!isCommitId(commit)) {
      throw new NetworkError(`${this.hubName} answered without a valid commit id for ${id}@${ref.revision}`, 'ESF_BAD_RESPONSE');
    }

    const entries = await this.listTree(`${base}/tree/${commit}?recursive=true&expand=false`, ref, signal);
    const files = filesOfTree(entries, this.hubName);
    return { ref, commit, files };
  }

  /**
   * Every entry of the recursive tree, page by page (`Link: rel=next`). Bounded: pages, entries
   * and files are capped and each page must add entries, so a hub answering without end costs a
   * bounded number of requests and bounded memory, then a clear refusal (exit 2).
   */
  private async listTree(first: string, ref: ModelRef, signal: AbortSignal | undefined): Promise<unknown[]> {
    const id = repoId(ref);
    const what = `${this.hubName}'s file list of hf://${id}`;
    const entries: unknown[] = [];
    let files = 0;
    let next: string | undefined = first;
    const seen = new Set<string>();
    while (next) {
      if (seen.has(next)) throw new NetworkError(`${this.hubName} tree pagination loops at ${next}`, 'ESF_BAD_RESPONSE');
      if (seen.size >= MAX_TREE_PAGES) throw listingTooLarge(what, MAX_TREE_PAGES, 'pages');
      seen.add(next);
      const page = await apiGet(next, { dispatcher: this.dispatcher, headers: this.authHeaders(), onRetry: this.hooks.onRetry, signal });
      if (page.status !== 200) this.fail(page, ref);
      const items = parseJson<unknown>(page, `file list of ${id}`);
      if (!Array.isArray(items)) throw new NetworkError(`${this.hubName} file list of ${id} is not an array`, 'ESF_BAD_RESPONSE');
      for (const item of items as unknown[]) {
        if (entries.length >= MAX_LISTING_ENTRIES) throw listingTooLarge(what, MAX_LISTING_ENTRIES, 'entries');
        if ((item as Partial<TreeEntry> | null)?.type === 'file' && ++files > MAX_LISTING_FILES) throw listingTooLarge(what);
        entries.push(item);
      }
      next = nextLink(headerValue(page.headers, 'link'), next);
      if (next && items.length === 0) throw new NetworkError(`${this.hubName} file list of ${id}: an empty page links to another`, 'ESF_BAD_RESPONSE');
      if (next && next.length > MAX_NEXT_URL) throw new NetworkError(`${this.hubName} file list of ${id}: a "next" link longer than ${MAX_NEXT_URL} characters`, 'ESF_BAD_RESPONSE');
      // The token goes with every page: never follow a "next" page to another host.
      if (next && new URL(next).origin !== new URL(this.endpoint).origin) {
        throw new NetworkError(`${this.hubName} pointed the file list of ${id} at another host (${new URL(next).origin}); refusing to send the token there`, 'ESF_BAD_RESPONSE');
      }
    }
    return entries;
  }

  origin(manifest: Manifest, file: FileEntry): Origin {
    return {
      url: `${this.endpoint}/${encodePath(repoId(manifest.ref))}/resolve/${manifest.commit}/${encodePath(file.path)}`,
      hubHeaders: this.authHeaders(),
    };
  }

  /** Map the Hub's error headers to our error classes. Never returns. */
  private fail(res: ApiResponse, ref: ModelRef): never {
    const code = headerValue(res.headers, 'x-error-code');
    const msg = headerValue(res.headers, 'x-error-message');
    const id = repoId(ref);
    const detail = msg ? ` (${msg})` : '';
    if (code === 'GatedRepo' || ((res.status === 401 || res.status === 403) && !code && this.token)) {
      throw new AuthError(
        this.token
          ? `access to hf://${id} was refused with the token in use${detail}: check that HF_TOKEN holds a token with access to this repo`
          : `hf://${id} is gated${detail}: set HF_TOKEN to a token with access to it`,
        'ESF_GATED',
      );
    }
    if (code === 'RevisionNotFound') throw new NotFoundError(`revision ${JSON.stringify(ref.revision)} not found in hf://${id}${detail}`, 'ESF_REVISION_NOT_FOUND');
    if (code === 'RepoNotFound' || res.status === 404 || res.status === 401) {
      throw new NotFoundError(
        `repository hf://${id} not found${detail}${this.token ? '' : ' (if it is private, set HF_TOKEN)'}`,
        'ESF_REPO_NOT_FOUND',
      );
    }
    if (code === 'EntryNotFound') throw new NotFoundError(`entry not found in hf://${id}${detail}`, 'ESF_ENTRY_NOT_FOUND');
    if (res.status === 403) throw new AuthError(`access to hf://${id} forbidden${detail}: set HF_TOKEN`, 'ESF_FORBIDDEN');
    throw new NetworkError(`${this.hubName} answered ${res.status} for hf://${id}${detail}`, 'ESF_HTTP_STATUS');
  }
}

/**
 * The files of a recursive tree listing (untrusted JSON items): each with a safe path, a valid
 * size and at least one hash, sorted by path; directories skipped. Throws (a SwiftFetchError,
 * never anything else) on the first item that falls short. Pure.
 */
export function filesOfTree(entries: readonly unknown[], hubName = 'Hugging Face'): FileEntry[] {
  const files: FileEntry[] = [];
  for (const item of entries) {
    const e = (typeof item === 'object' && item !== null ? item : {}) as Partial<TreeEntry>;
    if (e.type !== 'file') continue;
    const lfs = typeof e.lfs === 'object' && e.lfs !== null ? e.lfs : undefined;
    const sha256 = lfs?.oid ?? lfs?.sha256;
    const size = lfs?.size ?? e.size;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw new NetworkError(`${hubName} lists ${JSON.stringify(e.path)} without a valid size`, 'ESF_BAD_RESPONSE');
    }
    const f: FileEntry = { path: validateRepoPath(e.path), size, lfs: lfs !== undefined };
    if (typeof sha256 === 'string' && /^[0-9a-f]{64}$/.test(sha256)) f.sha256 = sha256;
    if (typeof e.oid === 'string' && /^[0-9a-f]{40}$/.test(e.oid)) f.gitOid = e.oid;
    if (!f.sha256 && !f.gitOid) {
      throw new NetworkError(`${hubName} lists ${JSON.stringify(e.path)} without any hash`, 'ESF_BAD_RESPONSE');
    }
    files.push(f);
  }
  // Validate before anything is written: the listing is untrusted input.
  validateListing(files.map((f) => f.path));
  return files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** The `rel="next"` target of a Link header, resolved against the current URL. */
export function nextLink(link: string | undefined, current: string): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(',')) {
    const m = /<([^>]+)>\s*;(.*)$/.exec(part.trim());
    if (m && /rel="?next"?/.test(m[2]!)) return new URL(m[1]!, current).toString();
  }
  return undefined;
}
