/**
 * Names the daemon writes into the cluster. The node label is the placement contract with the
 * chart: `models.swift-fetch.io/<h>=ready`, where <h> is the first 16 hex characters of the SHA-256
 * of the canonical ref `hf://ORG/NAME@REV` (so `huggingface://org/name` and `hf://org/name@main`
 * land on the same label). The inference templates compute the same hash with sha256sum.
 */
import { createHash } from 'node:crypto';
import { formatRef, parseRef, type ModelRef } from '../core/ref.js';

export const MODEL_LABEL_PREFIX = 'models.swift-fetch.io/';
export const MODEL_LABEL_READY = 'ready';

/** The short hash of a model reference (a string is parsed first; bare ORG/NAME follows USE_HF in `env`). */
export function modelRefHash(ref: string | ModelRef, env: NodeJS.ProcessEnv = process.env): string {
  const canonical = formatRef(typeof ref === 'string' ? parseRef(ref, env) : ref);
  return createHash('sha256').update(canonical).digest('hex').slice(0, 16);
}

/** The node label key that says this model is verified in the node's store. */
export function modelLabelKey(ref: string | ModelRef, env: NodeJS.ProcessEnv = process.env): string {
  return MODEL_LABEL_PREFIX + modelRefHash(ref, env);
}

/**
 * The server-side-apply field manager of one node's status entry. Managers are limited to 128
 * characters and node names may have 253, so long names are hashed (still one manager per node).
 */
export function nodeFieldManager(node: string): string {
  const name = `swift-fetch-node/${node}`;
  return name.length <= 128 ? name : `swift-fetch-node/sha256-${createHash('sha256').update(node).digest('hex').slice(0, 32)}`;
}
