/**
 * TLS for the daemon's listener and for the clients that talk to it (peers, `init`).
 *
 * Server side: the certificate and key come from files (a cert-manager Secret, mounted), are
 * checked to belong together at start, and are looked at again every couple of seconds; when they
 * changed (fileVersion: a kubelet `..data` swap included) the live server gets the new pair through
 * setSecureContext, so a rotation needs no restart and open connections keep theirs.
 *
 * Client side: a ServerTrust says which CAs a server's certificate must chain to and, optionally,
 * which name it must carry. Peers are reached by pod IP and init reaches its node's daemon by node
 * IP, neither of which a certificate issued ahead of time can name: there the name checked is a
 * fixed one that every daemon's certificate carries (the peers Service's DNS name in the chart).
 */
import { readFileSync } from 'node:fs';
import type { Server } from 'node:https';
import { createSecureContext } from 'node:tls';
import { UsageError } from '../core/errors.js';
import { fileVersion } from './file-version.js';

/** How a client checks a server's certificate. */
export interface ServerTrust {
  /** PEM CA certificates the server's certificate must chain to (default: the system's). */
  ca?: string;
  /** The name the certificate must carry (default: the host in the URL). */
  serverName?: string;
}

/** undici `connect` options that check the server against `trust`. */
export function connectOptions(trust: ServerTrust | undefined): { ca?: string; servername?: string } {
  if (!trust) return {};
  return { ...(trust.ca ? { ca: trust.ca } : {}), ...(trust.serverName ? { servername: trust.serverName } : {}) };
}

/** A PEM file, read now; one that is missing, unreadable or holds no PEM block is bad configuration (exit 2). */
export function readPem(file: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'ESF_TLS', { cause: e });
  }
  if (!/-----BEGIN [A-Z0-9 ]+-----/.test(text)) throw new UsageError(`${what} ${file} holds no PEM data`, 'ESF_TLS');
  return text;
}

export interface KeyPairFiles {
  certFile: string;
  keyFile: string;
}

/** The certificate chain and key, read and checked to belong together (UsageError otherwise). */
export function loadKeyPair(files: KeyPairFiles): { cert: string; key: string } {
  const pair = { cert: readPem(files.certFile, 'tls.certFile'), key: readPem(files.keyFile, 'tls.keyFile') };
  try {
    createSecureContext(pair);
  } catch (e) {
    throw new UsageError(`tls: ${files.certFile} and ${files.keyFile} do not make a usable pair: ${(e as Error).message}`, 'ESF_TLS', { cause: e });
  }
  return pair;
}

export interface KeepCurrentOptions {
  intervalMs?: number;
  onReload?: () => void;
  /** A changed pair that does not load: the last good one stays, and it is tried again. */
  onError?: (e: Error) => void;
}

/** Keep `server`'s certificate in step with the files; returns the function that stops it. */
export function keepCertCurrent(server: Server, files: KeyPairFiles, opts: KeepCurrentOptions = {}): () => void {
  const version = () => {
    try {
      return `${fileVersion(files.certFile)}|${fileVersion(files.keyFile)}`;
    } catch {
      return undefined; // briefly missing mid-swap: look again next time
    }
  };
  let loaded = version();
  // A broken pair is reported once, not every interval; the next change is tried again.
  let failed: string | undefined;
  const timer = setInterval(() => {
    const now = version();
    if (now === undefined || now === loaded || now === failed) return;
    try {
      server.setSecureContext(loadKeyPair(files));
      loaded = now;
      failed = undefined;
      opts.onReload?.();
    } catch (e) {
      failed = now;
      opts.onError?.(e as Error);
    }
  }, opts.intervalMs ?? 2_000);
  timer.unref();
  return () => clearInterval(timer);
}
