import type { FaultKind, FaultSpec } from './types.js';

interface Queued {
  spec: FaultSpec;
  remaining: number;
}

/** What a request offers to the fault queue once its handler knows what it is about to send. */
export interface FaultContext {
  host: 'hub' | 'cdn';
  urlPath: string;
  filePath?: string;
  /** Kinds that make sense for this response (e.g. 'corrupt' only if the body covers the offset). */
  applicable: (spec: FaultSpec) => boolean;
}

/**
 * Faults are consumed strictly in queue order: a request takes the first queued fault that
 * matches its host and path and that can apply to what it is about to send.
 */
export class FaultQueue {
  private queue: Queued[] = [];

  add(spec: FaultSpec): void {
    const times = spec.times ?? 1;
    if (!(times > 0)) return;
    this.queue.push({ spec, remaining: times });
  }

  clear(): void {
    this.queue = [];
  }

  take(ctx: FaultContext): FaultSpec | undefined {
    for (let i = 0; i < this.queue.length; i++) {
      const q = this.queue[i]!;
      if (!matches(q.spec, ctx) || !ctx.applicable(q.spec)) continue;
      q.remaining -= 1;
      if (q.remaining <= 0) this.queue.splice(i, 1);
      return q.spec;
    }
    return undefined;
  }
}

function matches(spec: FaultSpec, ctx: FaultContext): boolean {
  const host = spec.host ?? 'any';
  if (host !== 'any' && host !== ctx.host) return false;
  if (spec.path === undefined) return true;
  const candidates = [ctx.urlPath, ...(ctx.filePath === undefined ? [] : [ctx.filePath])];
  if (typeof spec.path === 'string') return candidates.includes(spec.path);
  const re = spec.path;
  return candidates.some((c) => {
    re.lastIndex = 0;
    return re.test(c);
  });
}

/** Faults that any response can take, body or not. */
export function alwaysApplicable(kind: FaultKind, host: 'hub' | 'cdn'): boolean {
  return kind === 'status' || (kind === 'expireSigned' && host === 'cdn');
}
