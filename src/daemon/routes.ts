/**
 * The daemon API's wire contract: its routes and the JSON it answers with. The server (api.ts)
 * registers these patterns and the client (client.ts) builds these paths, so the two cannot drift.
 */
import type { ModelStatus } from './reconciler.js';

/** Route patterns as the router matches them (`*ref`: the rest of the path, still encoded). */
export const ROUTES = {
  healthz: '/healthz',
  readyz: '/readyz',
  metrics: '/metrics',
  models: '/v1/models',
  /** One model, or its event stream when the path ends in `/events`. */
  model: '/v1/models/*ref',
  pulls: '/v1/pulls',
  maxRate: '/v1/config/max-rate',
} as const;

/** Path of one model: the ref percent-encoded as one segment (an encoded `/` stays inside it). */
export function modelPath(key: string): string {
  return `${ROUTES.models}/${encodeURIComponent(key)}`;
}

/** `?until=ready`: failures do not end the stream; it stays open through the daemon's retries. */
export function eventsPath(key: string, until?: 'ready' | 'settled'): string {
  return `${modelPath(key)}/events${until ? `?until=${until}` : ''}`;
}

/**
 * What `GET /v1/models` lists and every model route answers: the reconciler's status of a model,
 * sent as it is (api.ts orders the contract's fields first).
 */
export type ModelView = ModelStatus;

/**
 * Event names of `GET /v1/models/{ref}/events`. Each carries a ModelView as its data, except
 * `removed` (`{ref}`). `ready` and `failed` end a stream; so do `removed` and `shutdown` (the
 * daemon is stopping: the data is the model's last state).
 */
export type ModelEventName = 'progress' | 'ready' | 'failed' | 'removed' | 'shutdown';

/** Body of `POST /v1/pulls`. */
export interface PullRequestBody {
  ref: string;
  include?: string[];
  exclude?: string[];
}
