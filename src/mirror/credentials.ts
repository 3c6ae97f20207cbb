/**
 * A client's own credentials, exactly as its hub client sent them. They are forwarded to that
 * hub only (API calls and the engine's hub-only headers), kept in memory only while needed, and
 * known everywhere else by a salted SHA-256: the key of the short-lived access cache.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { ModelHub } from '../core/ref.js';

export interface Credentials {
  /** The token, when the client sent one (Bearer header; ModelScope also its session cookie). */
  token: string | undefined;
  /** Headers to send upstream on the client's behalf (nothing else of the request is forwarded). */
  headers: Record<string, string>;
  /** Hash of the credentials, or "anonymous": safe to keep in maps and logs. */
  key: string;
}

// Per process: a hash seen in a heap dump or a log cannot be matched against a token list offline.
const SALT = randomBytes(16);

export const ANONYMOUS: Credentials = { token: undefined, headers: {}, key: 'anonymous' };

function bearer(v: string | undefined): string | undefined {
  const m = v ? /^\s*Bearer\s+(\S+)\s*$/i.exec(v) : null;
  return m ? m[1] : undefined;
}

function sessionCookie(v: string | undefined): string | undefined {
  for (const part of (v ?? '').split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === 'm_session_id' && rest.length > 0) return rest.join('=');
  }
  return undefined;
}

/** Credentials of a request to the `hub` protocol (HF: Bearer; ModelScope: Bearer and/or m_session_id). */
export function credentialsOf(hub: ModelHub, h: IncomingHttpHeaders): Credentials {
  const auth = bearer(typeof h.authorization === 'string' ? h.authorization : undefined);
  const cookie = hub === 'ms' ? sessionCookie(typeof h.cookie === 'string' ? h.cookie : undefined) : undefined;
  const token = auth ?? cookie;
  if (token === undefined) return ANONYMOUS;
  const headers: Record<string, string> = {};
  if (auth !== undefined) headers.authorization = `Bearer ${auth}`;
  if (cookie !== undefined) headers.cookie = `m_session_id=${cookie}`;
  const key = createHash('sha256').update(SALT).update(`${hub}\0${auth ?? ''}\0${cookie ?? ''}`).digest('hex');
  return { token, headers, key };
}
