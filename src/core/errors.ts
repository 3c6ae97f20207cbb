/**
 * One error hierarchy with stable codes. The CLI maps `exitCode` to the process exit status in
 * exactly one place (src/cli/main.ts); everything else throws these.
 */
export const ExitCode = {
  ok: 0,
  usage: 2,
  notFound: 3,
  auth: 4,
  integrity: 5,
  storage: 6,
  network: 7,
  timeout: 8,
} as const;

export class SwiftFetchError extends Error {
  readonly code: string;
  readonly exitCode: number;
  constructor(code: string, exitCode: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.exitCode = exitCode;
  }
}

/** Bad flags, bad refs, bad config, hostile listings or bundles: exit 2. */
export class UsageError extends SwiftFetchError {
  constructor(message: string, code = 'ESF_USAGE', options?: { cause?: unknown }) {
    super(code, ExitCode.usage, message, options);
  }
}

/** A path in a listing or bundle that must never be written. */
export class UnsafePathError extends SwiftFetchError {
  readonly path: string;
  constructor(path: string, reason: string) {
    super('ESF_UNSAFE_PATH', ExitCode.usage, `refusing unsafe path ${JSON.stringify(path)}: ${reason}`);
    this.path = path;
  }
}

export class NotFoundError extends SwiftFetchError {
  constructor(message: string, code = 'ESF_NOT_FOUND', options?: { cause?: unknown }) {
    super(code, ExitCode.notFound, message, options);
  }
}

export class AuthError extends SwiftFetchError {
  constructor(message: string, code = 'ESF_AUTH', options?: { cause?: unknown }) {
    super(code, ExitCode.auth, message, options);
  }
}

export class IntegrityError extends SwiftFetchError {
  readonly expected: string;
  readonly found: string;
  readonly path: string | undefined;
  constructor(message: string, details: { expected: string; found: string; path?: string }) {
    super('ESF_INTEGRITY', ExitCode.integrity, message);
    this.expected = details.expected;
    this.found = details.found;
    this.path = details.path;
  }
}

export class StorageError extends SwiftFetchError {
  constructor(message: string, code = 'ESF_STORAGE', options?: { cause?: unknown }) {
    super(code, ExitCode.storage, message, options);
  }
}

export class NetworkError extends SwiftFetchError {
  constructor(message: string, code = 'ESF_NETWORK', options?: { cause?: unknown }) {
    super(code, ExitCode.network, message, options);
  }
}

export class TimeoutError extends SwiftFetchError {
  constructor(message: string, code = 'ESF_TIMEOUT', options?: { cause?: unknown }) {
    super(code, ExitCode.timeout, message, options);
  }
}

export function isSwiftFetchError(e: unknown): e is SwiftFetchError {
  return e instanceof SwiftFetchError;
}

/** Exit code for any thrown value: ours carry one; anything else is an internal failure (1). */
export function exitCodeOf(e: unknown): number {
  return isSwiftFetchError(e) ? e.exitCode : 1;
}
