/**
 * A shared secret sent as `Authorization: Bearer <token>`: the peers' token and the node API's.
 * It comes from a file mounted from a Kubernetes Secret, or is given directly (tests, the CLI).
 *
 * The file is re-read when it changes (fileVersion: a kubelet `..data` swap included), so rotating
 * the Secret needs no restart; it is looked at lazily on use, at most every couple of seconds. The
 * value never leaves this object except as an `authorization` header.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AuthError, UsageError } from '../core/errors.js';
import { fileVersion } from './file-version.js';

/** How often the token file is looked at again. */
const RECHECK_MS = 2_000;

export class BearerToken {
  private value: string | undefined;
  private fingerprint = '';
  private checkedAt = 0;

  private constructor(
    private readonly file: string | undefined,
    /** What the file is called in messages (`api.tokenFile`, `--daemon-token-file`). */
    private readonly what: string,
    value: string | undefined,
  ) {
    this.value = value;
  }

  static fromValue(token: string, what = 'the token'): BearerToken {
    if (token.trim() === '') throw new UsageError(`${what} is empty`);
    return new BearerToken(undefined, what, token.trim());
  }

  /** Reads the file now: a missing or empty file at start is a configuration error (exit 2). */
  static fromFile(path: string, what = 'token file'): BearerToken {
    const t = new BearerToken(path, what, undefined);
    t.reload(true);
    return t;
  }

  private reload(strict: boolean): void {
    const file = this.file!;
    try {
      const fingerprint = fileVersion(file);
      if (fingerprint === this.fingerprint && this.value !== undefined) return;
      const text = readFileSync(file, 'utf8').trim();
      if (text === '') throw new UsageError(`${this.what} ${file} is empty`);
      this.value = text;
      this.fingerprint = fingerprint;
    } catch (e) {
      // A Secret being swapped may briefly vanish or be empty: keep the last good token then.
      if (strict) {
        if (e instanceof UsageError) throw e;
        throw new UsageError(`cannot read ${this.what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'ESF_USAGE', { cause: e });
      }
    }
  }

  /** The current token (re-reading the file at most every couple of seconds). */
  current(): string {
    if (this.file && Date.now() - this.checkedAt > RECHECK_MS) {
      this.checkedAt = Date.now();
      this.reload(false);
    }
    if (this.value === undefined) throw new AuthError(`no token available from ${this.what}`);
    return this.value;
  }

  /** `authorization` header value for requests that carry this token. */
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
