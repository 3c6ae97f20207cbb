/**
 * The ModelCache resource (`swift-fetch.io/v1alpha1`, cluster-scoped) and the pure rules around it:
 * which node a cache selects, what one node reports, and the totals over all nodes. The CRD that
 * the API server validates against is chart/swift-fetch/crds/modelcaches.swift-fetch.io.yaml.
 */

import { formatRef, parseRef } from '../core/ref.js';
import type { ModelSpecLike, ModelState } from './types.js';
import type { KubeObject } from './client.js';

export const GROUP = 'swift-fetch.io';
export const VERSION = 'v1alpha1';
export const KIND = 'ModelCache';
export const MODELCACHES_PATH = `/apis/${GROUP}/${VERSION}/modelcaches`;

export interface ModelCacheSpec {
  ref: string;
  include?: string[];
  exclude?: string[];
  /** Node labels a node must carry (all of them) to keep this model; absent or empty means every node. */
  nodeSelector?: Record<string, string>;
}

export interface NodeEntry {
  node: string;
  state: ModelState;
  commit?: string;
  bytesDone: number;
  bytesTotal: number;
  error?: string;
  updatedAt: string;
}

export interface ModelCacheStatus {
  nodes?: NodeEntry[];
  ready?: number;
  failed?: number;
  total?: number;
}

export interface ModelCache extends KubeObject {
  spec: ModelCacheSpec;
  status?: ModelCacheStatus;
}

/** Whether a node with these labels keeps the cache's model (the pod nodeSelector rule: all must match). */
export function selectsNode(spec: Pick<ModelCacheSpec, 'nodeSelector'>, nodeLabels: Readonly<Record<string, string>>): boolean {
  return Object.entries(spec.nodeSelector ?? {}).every(([k, v]) => nodeLabels[k] === v);
}

/** The daemon's model spec for a cache; throws the ref parser's UsageError for a bad ref. */
export function toModelSpec(spec: ModelCacheSpec, env: NodeJS.ProcessEnv): ModelSpecLike {
  const ref = parseRef(spec.ref, env);
  const out: ModelSpecLike = { ref, key: formatRef(ref) };
  if (spec.include?.length) out.include = [...spec.include];
  if (spec.exclude?.length) out.exclude = [...spec.exclude];
  return out;
}

export function totals(nodes: readonly NodeEntry[] | undefined): Required<Pick<ModelCacheStatus, 'ready' | 'failed' | 'total'>> {
  const list = nodes ?? [];
  return {
    ready: list.filter((n) => n.state === 'ready').length,
    failed: list.filter((n) => n.state === 'failed').length,
    total: list.length,
  };
}

/** Entries compare equal when everything but the timestamp matches (no write for a no-op). */
export function sameEntry(a: NodeEntry | undefined, b: NodeEntry | undefined): boolean {
  if (!a || !b) return a === b;
  return a.state === b.state && a.commit === b.commit && a.bytesDone === b.bytesDone && a.bytesTotal === b.bytesTotal && a.error === b.error;
}
