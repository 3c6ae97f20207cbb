/**
 * A small Kubernetes API client over undici: JSON requests, patches of the three kinds the API
 * server knows, and watches read as the newline-delimited event stream they are. No proxy is ever
 * used (the API server is cluster-internal; HTTPS_PROXY is for hub traffic) and no redirect is
 * followed, so the bearer token only ever goes to the configured server.
 */
import { Agent, request, type Dispatcher } from 'undici';
import type { KubeConnection } from './connection.js';

export type PatchType = 'apply' | 'merge' | 'json';
const PATCH_CONTENT_TYPE: Record<PatchType, string> = {
  // Server-side apply takes YAML, of which JSON is a subset.
  apply: 'application/apply-patch+yaml',
  merge: 'application/merge-patch+json',
  json: 'application/json-patch+json',
};

/** What the API server said when it refused; `status` 0 means it was not reached at all. */
export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly verb: string,
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KubeApiError';
  }
  get forbidden(): boolean {
    return this.status === 403;
  }
  get notFound(): boolean {
    return this.status === 404;
  }
  get conflict(): boolean {
    return this.status === 409;
  }
  /** 410 Gone: a watch's resourceVersion is too old; list again. */
  get expired(): boolean {
    return this.status === 410;
  }
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string; labels?: Record<string, string>; generation?: number; [k: string]: unknown };
  [k: string]: unknown;
}

export interface KubeList<T> {
  metadata: { resourceVersion: string };
  items: T[];
}

export interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T;
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
}

/** `verb` as RBAC names it, for messages such as "cannot patch nodes". */
function rbacVerb(method: string, query: RequestOptions['query']): string {
  if (method === 'GET') return query?.watch ? 'watch' : 'get';
  return { POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' }[method] ?? method.toLowerCase();
}

export class KubeClient {
  private readonly dispatcher: Dispatcher;

  constructor(readonly conn: KubeConnection) {
    const tls: Record<string, unknown> = { rejectUnauthorized: !conn.insecureSkipTlsVerify };
    if (conn.ca) tls.ca = conn.ca;
    if (conn.cert && conn.key) {
      tls.cert = conn.cert;
      tls.key = conn.key;
    }
    if (conn.tlsServerName) tls.servername = conn.tlsServerName;
    // Watches hold a connection for minutes: no body timeout (the server ends them via timeoutSeconds).
    this.dispatcher = new Agent({ connect: tls, connections: 8, headersTimeout: 30_000, bodyTimeout: 0, keepAliveTimeout: 30_000 });
  }

  private async send(method: Dispatcher.HttpMethod, path: string, opts: RequestOptions): Promise<Dispatcher.ResponseData> {
    const url = new URL(this.conn.server + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'swift-fetch/0.1' };
    const token = await this.conn.token();
    if (token) headers.authorization = `Bearer ${token}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] = opts.contentType ?? 'application/json';
    }
    try {
      return await request(url, { method, headers, body, dispatcher: this.dispatcher, signal: opts.signal });
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      throw new KubeApiError(0, 'Unreachable', `cannot reach the Kubernetes API at ${this.conn.server}: ${(e as Error).message}`, rbacVerb(method, opts.query), path, { cause: e });
    }
  }

  private async fail(res: Dispatcher.ResponseData, method: string, path: string, query: RequestOptions['query']): Promise<never> {
    const text = await res.body.text().catch(() => '');
    let reason = String(res.statusCode);
    let message = text.slice(0, 500);
    try {
      const status = JSON.parse(text) as { reason?: string; message?: string };
      reason = status.reason ?? reason;
      message = status.message ?? message;
    } catch {
      // Not a Status object (a proxy or a dying server answered): keep the raw text.
    }
    throw new KubeApiError(res.statusCode, reason, message, rbacVerb(method, query), path);
  }

  /** One request with a JSON answer; a non-2xx answer is a KubeApiError. */
  async json<T>(method: Dispatcher.HttpMethod, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.send(method, path, opts);
    if (res.statusCode < 200 || res.statusCode >= 300) return this.fail(res, method, path, opts.query);
    return (await res.body.json()) as T;
  }

  get<T>(path: string, opts: Omit<RequestOptions, 'body'> = {}): Promise<T> {
    return this.json<T>('GET', path, opts);
  }

  create<T>(path: string, body: unknown, opts: Omit<RequestOptions, 'body'> = {}): Promise<T> {
    return this.json<T>('POST', path, { ...opts, body });
  }

  patch<T>(path: string, type: PatchType, body: unknown, opts: Omit<RequestOptions, 'body' | 'contentType'> = {}): Promise<T> {
    return this.json<T>('PATCH', path, { ...opts, body, contentType: PATCH_CONTENT_TYPE[type] });
  }

  /**
   * Watch a collection from `resourceVersion`. Yields events until the server ends the stream
   * (timeoutSeconds), the connection drops, or `signal` aborts. An ERROR event (410 when the
   * version is too old) is thrown as a KubeApiError.
   */
  async *watch<T>(path: string, resourceVersion: string, opts: { signal?: AbortSignal; timeoutSeconds?: number } = {}): AsyncGenerator<WatchEvent<T>> {
    const query = { watch: 1, resourceVersion, allowWatchBookmarks: true, timeoutSeconds: opts.timeoutSeconds ?? 300 };
    const res = await this.send('GET', path, { query, signal: opts.signal });
    if (res.statusCode !== 200) return void (await this.fail(res, 'GET', path, query));
    let buffered = '';
    const decoder = new TextDecoder();
    for await (const chunk of res.body) {
      buffered += decoder.decode(chunk as Uint8Array, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line === '') continue;
        const ev = JSON.parse(line) as WatchEvent<T>;
        if (ev.type === 'ERROR') {
          const st = ev.object as unknown as { code?: number; reason?: string; message?: string };
          throw new KubeApiError(st.code ?? 500, st.reason ?? 'Error', st.message ?? 'watch error', 'watch', path);
        }
        yield ev;
      }
    }
  }

  async close(): Promise<void> {
    await this.dispatcher.close().catch(() => undefined);
  }
}
