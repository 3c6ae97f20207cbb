import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { AuthError, UsageError } from '../core/errors.js';

/** How often the token file is looked at again (a Kubernetes Secret update rewrites it in place). */
const RECHECK_MS = 2_000;

/**
 * The shared peer token, from a file mounted from a Kubernetes Secret (re-read when it changes,
 * so rotating the Secret needs no restart) or given directly (tests, the CLI). The value never
 * leaves this object except as the `authorization` header of requests to peers.
 */
export class PeerToken {
  private value: string | undefined;
  private mtimeMs = -1;
  private checkedAt = 0;

  private constructor(
    private readonly file: string | undefined,
    value: string | undefined,
  ) {
    this.value = value;
  }

  static fromValue(token: string): PeerToken {
    if (token.trim() === '') throw new UsageError('the peer token is empty');
    return new PeerToken(undefined, token.trim());
  }

  /** Reads the file now: a missing or empty file at start is a configuration error. */
  static fromFile(path: string): PeerToken {
    const t = new PeerToken(path, undefined);
    t.reload(true);
    return t;
  }

  private reload(strict: boolean): void {
    const file = this.file!;
    try {
      const st = statSync(file);
      if (st.mtimeMs === this.mtimeMs && this.value !== undefined) return;
      const text = readFileSync(file, 'utf8').trim();
      if (text === '') throw new UsageError(`peers.tokenFile ${file} is empty`);
      this.value = text;
      this.mtimeMs = st.mtimeMs;
    } catch (e) {
      // A Secret being swapped may briefly vanish: keep the last good token then.
      if (strict) {
        if (e instanceof UsageError) throw e;
        throw new UsageError(`cannot read peers.tokenFile ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'ESF_USAGE', { cause: e });
      }
    }
  }

  /** The current token (re-reading the file at most every couple of seconds). */
  current(): string {
    if (this.file && Date.now() - this.checkedAt > RECHECK_MS) {
      this.checkedAt = Date.now();
      this.reload(false);
    }
    if (this.value === undefined) throw new AuthError('no peer token available');
    return this.value;
  }

  /** The `authorization` header value for requests to peers. */
  authorization(): string {
    return `Bearer ${this.current()}`;
  }

  /** Constant-time check of an incoming `authorization` header. */
  accepts(authorization: string | string[] | undefined): boolean {
    if (typeof authorization !== 'string') return false;
    const m = /^Bearer\s+(.+)$/i.exec(authorization.trim());
    if (!m) return false;
    let want: string;
    try {
      want = this.current();
    } catch {
      return false;
    }
    // Compare digests: equal lengths, so neither the token nor its length leaks through timing.
    const a = createHash('sha256').update(m[1]!).digest();
    const b = createHash('sha256').update(want).digest();
    return timingSafeEqual(a, b);
  }
}
