/**
 * The hubs behind the mirror, asked with the client's own credentials only: this module never
 * reads the daemon's tokens. A hub that cannot be reached, or answers 5xx, is "down": callers fall
 * back to what the store holds.
 */
import type { Dispatcher } from 'undici';
import type { ModelHub } from '../core/ref.js';
import { hfSettings, msSettings } from '../sources/index.js';
import { apiGet, type ApiResponse } from '../sources/http.js';
import { HuggingFaceSource } from '../sources/huggingface.js';
import { MAX_MS_LIST_BODY, ModelScopeSource } from '../sources/modelscope.js';
import type { Source } from '../sources/source.js';
import { proxyAwareDispatcher } from '../transfer/index.js';
import type { Credentials } from './credentials.js';

export type { ApiResponse };

/** Upstream answers must come well inside the clients' own 10 s timeouts. */
const API_TIMEOUT_MS = 8_000;

export class Upstream {
  readonly endpoints: Record<ModelHub, string>;
  private readonly dispatcher: Dispatcher;

  constructor(env: NodeJS.ProcessEnv) {
    // Endpoints only: hfSettings/msSettings also find the daemon's token, which is not ours to use.
    this.endpoints = { hf: hfSettings(env).endpoint, ms: msSettings(env).endpoint };
    this.dispatcher = proxyAwareDispatcher(env, { connections: 16, headersTimeout: API_TIMEOUT_MS, bodyTimeout: API_TIMEOUT_MS });
  }

  /** GET `pathAndQuery` on the hub; undefined when the hub is down (unreachable or 5xx). */
  async get(hub: ModelHub, pathAndQuery: string, creds: Credentials, signal?: AbortSignal): Promise<ApiResponse | undefined> {
    try {
      // No retries here: a client is waiting, and a hub that is down falls back to the store.
      // ModelScope answers a whole repo's file list in one body: it gets that listing's larger cap.
      const maxBytes = hub === 'ms' ? MAX_MS_LIST_BODY : undefined;
      const res = await apiGet(`${this.endpoints[hub]}${pathAndQuery}`, { dispatcher: this.dispatcher, headers: creds.headers, retries: 0, ...(maxBytes ? { maxBytes } : {}), ...(signal ? { signal } : {}) });
      return res.status >= 500 ? undefined : res;
    } catch (e) {
      if (signal?.aborted) throw e;
      return undefined;
    }
  }

  /** The hub adapter with the client's token (or none): listings and origin URLs on its behalf. */
  source(hub: ModelHub, creds: Credentials): Source {
    const settings = { endpoint: this.endpoints[hub], token: creds.token };
    return hub === 'hf' ? new HuggingFaceSource(settings, this.dispatcher) : new ModelScopeSource(settings, this.dispatcher);
  }

  async close(): Promise<void> {
    await this.dispatcher.close().catch(() => undefined);
  }
}
