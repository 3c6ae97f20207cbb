import { createHash } from 'node:crypto';

/**
 * Highest-random-weight (rendezvous) hashing: every node that sees the same member set picks the
 * same owner for a piece, and a member leaving moves only the pieces it owned. Pieces are named by
 * the blob hash and the piece's end offset: the engine asks for `[chunk.start + done, chunk.end)`
 * and splits a slow chunk as `[mid, chunk.end)`, so the end is what every request of one chunk shares.
 */
export function ownerOf(sha256: string, pieceEnd: number, members: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestWeight = -1n;
  for (const m of members) {
    const w = createHash('sha256').update(`${m}\0${sha256}\0${pieceEnd}`).digest().readBigUInt64BE(0);
    if (w > bestWeight || (w === bestWeight && best !== undefined && m < best)) {
      best = m;
      bestWeight = w;
    }
  }
  return best;
}

/**
 * The `k` members of highest weight for a blob: its trackers. Every node that sees the same
 * members picks the same ones, so all nodes fetching a blob announce themselves to the same few
 * nodes and learn the rest of the swarm from them (docs/p2p.md, "Control traffic").
 */
export function trackersOf(sha256: string, members: readonly string[], k: number): Set<string> {
  return new Set(trackerRanking(sha256, members).slice(0, k));
}

/** Members by tracker weight for a blob, highest first. */
export function trackerRanking(sha256: string, members: readonly string[]): string[] {
  const weighted = members.map((m) => ({ m, w: createHash('sha256').update(`${m}\0${sha256}\0tracker`).digest().readBigUInt64BE(0) }));
  weighted.sort((a, b) => (a.w === b.w ? (a.m < b.m ? -1 : 1) : a.w > b.w ? -1 : 1));
  return weighted.map((x) => x.m);
}
