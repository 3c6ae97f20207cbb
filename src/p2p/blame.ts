/**
 * Who sent which bytes. The whole-file hash is the root of trust, but it cannot say who lied, so
 * every range a peer hands us is hashed on the way in. When a blob fails its hash, the peers that
 * contributed to it are suspended at once; the engine refetches the blob from the origin alone, and
 * once that copy verifies, each recorded range is compared with the same bytes of the verified
 * file: a peer whose bytes differ is quarantined, the others are cleared.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

interface Rec {
  /** The peer's address (its base URL): what it cannot change by reporting another node id. */
  peer: string;
  start: number;
  len: number;
  sha256: string;
  /** The peer served it from a finished blob (which it verified), not from a download in progress. */
  finished: boolean;
}

/** Suspicion without a verdict (the refetch failed too, the process stopped) ends after this. */
const SUSPEND_MS = 10 * 60_000;
const READ = 1024 * 1024;

export interface Verdict {
  /** Peers whose bytes differ from the verified file; `finished` when they came from a finished blob. */
  guilty: Array<{ peer: string; finished: boolean }>;
  cleared: string[];
}

/** Keyed by each blob's SHA-256 (peers serve nothing else); peers are named by their address. */
export class BlameLedger {
  private readonly records = new Map<string, Rec[]>();
  private readonly suspectBlobs = new Map<string, Set<string>>();
  private readonly suspended = new Map<string, number>();

  record(blob: string, peer: string, start: number, len: number, sha256: string, finished: boolean): void {
    if (len <= 0) return;
    let list = this.records.get(blob);
    if (!list) this.records.set(blob, (list = []));
    list.push({ peer, start, len, sha256, finished });
  }

  /** The blob failed its hash: suspend every peer that contributed. Returns them. */
  mismatch(blob: string): string[] {
    const peers = new Set((this.records.get(blob) ?? []).map((r) => r.peer));
    if (peers.size === 0) return [];
    this.suspectBlobs.set(blob, peers);
    for (const p of peers) this.suspended.set(p, Date.now() + SUSPEND_MS);
    return [...peers];
  }

  isSuspended(peer: string): boolean {
    const until = this.suspended.get(peer);
    if (until === undefined) return false;
    if (Date.now() > until) {
      this.suspended.delete(peer);
      return false;
    }
    return true;
  }

  /** True while `blob` awaits a verdict (its refetch goes to the origin only). */
  awaitingVerdict(blob: string): boolean {
    return this.suspectBlobs.has(blob);
  }

  /**
   * `blob` verified; `readPaths` are where its verified bytes may be (partial file, then the store).
   * Without an earlier mismatch the records are simply dropped: every byte a peer sent is proven.
   */
  async verified(blob: string, readPaths: string[]): Promise<Verdict | undefined> {
    const recs = this.records.get(blob) ?? [];
    const suspects = this.suspectBlobs.get(blob);
    this.records.delete(blob);
    if (!suspects) return undefined;
    this.suspectBlobs.delete(blob);
    const fh = await openFirst(readPaths);
    if (!fh) {
      for (const p of suspects) this.suspended.delete(p);
      return { guilty: [], cleared: [...suspects] };
    }
    const guilty = new Map<string, boolean>();
    try {
      const buf = Buffer.allocUnsafe(READ);
      for (const r of recs) {
        if (guilty.get(r.peer) === true) continue;
        const h = createHash('sha256');
        let pos = r.start;
        const end = r.start + r.len;
        while (pos < end) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(READ, end - pos), pos);
          if (bytesRead === 0) break;
          h.update(buf.subarray(0, bytesRead));
          pos += bytesRead;
        }
        if (h.digest('hex') !== r.sha256) guilty.set(r.peer, (guilty.get(r.peer) ?? false) || r.finished);
      }
    } finally {
      await fh.close().catch(() => undefined);
    }
    const cleared = [...suspects].filter((p) => !guilty.has(p));
    for (const p of cleared) this.suspended.delete(p);
    return { guilty: [...guilty].map(([peer, finished]) => ({ peer, finished })), cleared };
  }

  /** The blob failed for good (or the pull ended): drop what we kept about it. */
  forget(blob: string): void {
    this.records.delete(blob);
    this.suspectBlobs.delete(blob);
  }
}

async function openFirst(paths: string[]) {
  for (const p of paths) {
    try {
      return await open(p, 'r');
    } catch {
      // next
    }
  }
  return undefined;
}
