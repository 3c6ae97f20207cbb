/**
 * Failures (auth, integrity, disk full, ...) and readiness as core/v1 Events on the ModelCache, so
 * `kubectl describe modelcache` tells the story per node. ModelCaches are cluster-scoped, and the
 * API server only accepts events about cluster-scoped objects in the `default` namespace. A repeat
 * of the same reason for the same cache and node bumps the event's count instead of adding one.
 */
import { createHash } from 'node:crypto';
import { ExitCode } from '../core/errors.js';
import { KubeApiError, type KubeClient } from './client.js';
import { GROUP, KIND, VERSION } from './modelcache.js';

export const EVENTS_NAMESPACE = 'default';

export interface EventInput {
  cache: { name: string; uid?: string };
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

const FAILURE_REASONS: Record<number, string> = {
  [ExitCode.auth]: 'AuthFailed',
  [ExitCode.integrity]: 'IntegrityFailed',
  [ExitCode.storage]: 'StorageFailed',
  [ExitCode.notFound]: 'NotFound',
  [ExitCode.network]: 'NetworkFailed',
  [ExitCode.timeout]: 'TimedOut',
  [ExitCode.usage]: 'InvalidSpec',
};

/** The event reason for a failed pull, by the exit code the failure carries. */
export function failureReason(exitCode: number | null): string {
  return (exitCode !== null && FAILURE_REASONS[exitCode]) || 'PullFailed';
}

export class EventRecorder {
  private readonly sent = new Map<string, { name: string; count: number; first: string }>();

  constructor(
    private readonly client: KubeClient,
    private readonly node: string,
  ) {}

  async record(ev: EventInput): Promise<void> {
    const path = `/api/v1/namespaces/${EVENTS_NAMESPACE}/events`;
    const key = `${ev.cache.uid ?? ev.cache.name}|${ev.reason}`;
    const now = new Date().toISOString();
    const prev = this.sent.get(key);
    const message = `node ${this.node}: ${ev.message}`.slice(0, 1024);
    if (prev) {
      const count = prev.count + 1;
      try {
        await this.client.patch(`${path}/${prev.name}`, 'merge', { count, lastTimestamp: now, message }, { query: { fieldManager: 'swift-fetch' } });
        prev.count = count;
        return;
      } catch (e) {
        // Events expire (an hour by default): start a new one.
        if (!(e instanceof KubeApiError && e.notFound)) throw e;
        this.sent.delete(key);
      }
    }
    const suffix = createHash('sha256').update(`${key}|${this.node}|${now}`).digest('hex').slice(0, 16);
    const name = `${ev.cache.name}.${suffix}`;
    const involvedObject: Record<string, string> = { apiVersion: `${GROUP}/${VERSION}`, kind: KIND, name: ev.cache.name };
    if (ev.cache.uid) involvedObject.uid = ev.cache.uid;
    await this.client.create(path, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace: EVENTS_NAMESPACE },
      involvedObject,
      type: ev.type,
      reason: ev.reason,
      message,
      source: { component: 'swift-fetch', host: this.node },
      reportingComponent: 'swift-fetch.io/daemon',
      reportingInstance: this.node,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    }, { query: { fieldManager: 'swift-fetch' } });
    this.sent.set(key, { name, count: 1, first: now });
  }
}
