/** The public contract of the fake hub. Other test authors code against these exact names. */

export interface FakeRepoFile {
  path: string;
  content?: Buffer | string;
  /** Absolute path on disk, streamed on every request (for multi-GB bench files). */
  file?: string;
}

export type FileSet = FakeRepoFile[] | Record<string, Buffer | string>;

export interface FakeRepoSpec {
  /** 'org/name' */
  id: string;
  /** Which protocols serve the repo. Default 'both'. */
  hub?: 'hf' | 'ms' | 'both';
  /** Files of the default branch (`main` on HF, `master` on ModelScope; same commit). */
  files: FileSet;
  /** Extra branches with their own file sets (and so their own commits). */
  branches?: Record<string, FileSet>;
  /** Tag name -> branch name (or full commit id) it points to. */
  tags?: Record<string, string>;
  /** Requests must carry `authorization: Bearer <token>` (ModelScope also: cookie m_session_id=<token>). */
  gated?: { token: string };
  /** Files of at least this many bytes are LFS (302 to the CDN). Default 1 MiB; *.safetensors / *.bin always are. */
  lfsThreshold?: number;
  /** Injected raw into every listing (hostile paths such as '../x', '/etc/x', 'a\u0000b'). Never downloadable. */
  extraListing?: Array<{ path: string; size?: number }>;
}

export interface AddedFile {
  path: string;
  size: number;
  sha256: string;
  /** The git blob id the hub lists: of the content for regular files, of the LFS pointer for LFS files. */
  gitOid: string;
  lfs: boolean;
}

export interface AddedRepo {
  id: string;
  /** Commit of the default branch (`main` on HF and `master` on ModelScope share it). */
  commit: string;
  /** Branch and tag name -> commit (includes `main` and `master`). */
  branchCommits: Record<string, string>;
  /** Files of the default branch, sorted by path. */
  files: AddedFile[];
}

export type FaultKind = 'status' | 'reset' | 'stall' | 'corrupt' | 'ignoreRange' | 'expireSigned';

export interface FaultSpec {
  kind: FaultKind;
  /** Default 'any'. */
  host?: 'hub' | 'cdn' | 'any';
  /**
   * Matches the repo file path (for downloads) or the decoded URL path; a string must equal one of
   * them. A file path also matches the hub's HEAD/302 for that file: use `host: 'cdn'` to aim at
   * an LFS body only.
   */
  path?: string | RegExp;
  /** For 'status' (503/429/500/...). */
  status?: number;
  /** For 'status': Retry-After seconds. */
  retryAfter?: number;
  /** For 'reset' (destroy the socket after N body bytes) and 'stall' (go silent after N bytes). Default 0. */
  afterBytes?: number;
  /**
   * For 'reset': true sends a TCP RST (client sees ECONNRESET); default false closes with FIN (client
   * sees a premature end of body). huggingface_hub 2.4 resumes after a FIN but not after an RST.
   */
  rst?: boolean;
  /** For 'corrupt': flip the byte at this file offset in a response that covers it. Default 0. */
  offset?: number;
  /** How many matching requests it applies to. Default 1; Infinity = always. */
  times?: number;
}

export interface RequestLogEntry {
  host: 'hub' | 'cdn';
  method: string;
  /** Raw request URL (path and query, as sent). */
  url: string;
  status: number;
  headers: Record<string, string | string[] | undefined>;
  range?: string;
  /** Response body bytes written to the socket so far. */
  bodyBytes: number;
  /** Repo file path when the request downloads (or HEADs) a file. */
  path?: string;
  /** Kind of fault applied to this request, if any. */
  fault?: FaultKind;
  /** The client's address (as the socket saw it): tells apart nodes of a multi-namespace test. */
  remoteAddress?: string;
}

export interface FakeHub {
  /** HF_ENDPOINT, e.g. http://127.0.0.1:PORT */
  hfEndpoint: string;
  /** MODELSCOPE_ENDPOINT (the same server as HF). */
  msEndpoint: string;
  /** The CDN, on a different host (127.0.0.2 by default) so hostnames differ. */
  cdnOrigin: string;
  addRepo(spec: FakeRepoSpec): Promise<AddedRepo>;
  addRepoFromDir(id: string, dir: string, opts?: Omit<FakeRepoSpec, 'id' | 'files'>): Promise<AddedRepo>;
  fault(spec: FaultSpec): void;
  clearFaults(): void;
  /** Every request, in arrival order. Entries are updated in place as the response proceeds. */
  log: RequestLogEntry[];
  /** Response body bytes actually written ("origin bytes"); `path` matches a file path or a URL path. */
  bytesSent(filter?: { host?: 'hub' | 'cdn'; path?: string }): number;
  /** Empties `log` (in place) and so the byte counters. */
  resetStats(): void;
  signedUrlTtlMs: number;
  /** Bytes per second per response body; undefined = unthrottled. */
  perConnectionRate?: number;
  close(): Promise<void>;
}

export interface StartOptions {
  host?: string;
  cdnHost?: string;
  /** Port of the hub server (default 0 = any). */
  port?: number;
  /** Port of the CDN server (default 0 = any). */
  cdnPort?: number;
  treePageSize?: number;
  signedUrlTtlMs?: number;
  perConnectionRate?: number;
}
