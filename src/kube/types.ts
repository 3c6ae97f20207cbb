/**
 * What the Kubernetes sync needs from the daemon, stated structurally so this folder does not
 * import the daemon (the daemon imports us): the reconciler's model list and its change events,
 * and a way to declare the models the cluster asks for.
 */
import type { ModelRef } from '../core/ref.js';

export type ModelState = 'pending' | 'downloading' | 'verifying' | 'ready' | 'failed';

/** The part of the daemon's ModelStatus the sync reads. */
export interface ModelStatusLike {
  /** Canonical key `hub://ORG/NAME@REV`. */
  ref: string;
  commit: string | null;
  state: ModelState;
  bytesDone: number;
  bytesTotal: number;
  error: string | null;
  exitCode: number | null;
  attempts: number;
}

/** The daemon's ModelSpec, structurally. */
export interface ModelSpecLike {
  ref: ModelRef;
  key: string;
  include?: string[];
  exclude?: string[];
}

/** The reconciler, as far as the sync is concerned. */
export interface ModelFeed {
  list(): ModelStatusLike[];
  get(key: string): ModelStatusLike | undefined;
  on(event: 'change', fn: (s: ModelStatusLike) => void): unknown;
  on(event: 'removed', fn: (key: string) => void): unknown;
  off(event: 'change', fn: (s: ModelStatusLike) => void): unknown;
  off(event: 'removed', fn: (key: string) => void): unknown;
}
