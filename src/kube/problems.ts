/**
 * Lost or missing API access must be visible without flooding the log: each kind of problem is
 * logged when it starts or changes, and once more when it clears. A 403 names the verb and the
 * resource the daemon's RBAC lacks, which is what an operator has to add.
 */
import type { Logger } from 'pino';
import { KubeApiError } from './client.js';

/** `modelcaches/status`, `nodes`, `events in namespace default`, from an API path. */
export function resourceOf(path: string): string {
  const p = path.split('?')[0]!.split('/').filter(Boolean);
  // /api/v1/... or /apis/GROUP/VERSION/...
  const rest = p[0] === 'api' ? p.slice(2) : p.slice(3);
  let ns: string | undefined;
  if (rest[0] === 'namespaces' && rest.length > 2) {
    ns = rest[1];
    rest.splice(0, 2);
  }
  const resource = rest.length >= 3 ? `${rest[0]}/${rest[2]}` : (rest[0] ?? path);
  const group = p[0] === 'apis' ? `.${p[1]}` : '';
  const name = resource.includes('/') ? resource.replace('/', `${group}/`) : `${resource}${group}`;
  return ns ? `${name} in namespace ${ns}` : name;
}

export function describeKubeError(e: unknown): string {
  if (e instanceof KubeApiError) {
    if (e.forbidden) return `RBAC does not allow "${e.verb}" on ${resourceOf(e.path)}: ${e.message}`;
    if (e.status === 401) return `the API server rejected our credentials (401): ${e.message}`;
    return `${e.verb} ${resourceOf(e.path)} failed (${e.status} ${e.reason}): ${e.message}`;
  }
  return (e as Error)?.message ?? String(e);
}

export class ProblemLog {
  private readonly current = new Map<string, string>();
  constructor(private readonly log: Logger) {}

  /** Report a failure of `area`; logged only when it differs from the area's last one. */
  fail(area: string, e: unknown): void {
    const msg = describeKubeError(e);
    if (this.current.get(area) === msg) return;
    this.current.set(area, msg);
    const extra: Record<string, unknown> = { area, err: msg };
    if (e instanceof KubeApiError && e.forbidden) extra.lacks = { verb: e.verb, resource: resourceOf(e.path) };
    this.log.warn(extra, `kubernetes: ${area} failed; downloads go on without it`);
  }

  /** The area works (again). */
  ok(area: string): void {
    if (!this.current.has(area)) return;
    this.current.delete(area);
    this.log.info({ area }, `kubernetes: ${area} works again`);
  }
}
