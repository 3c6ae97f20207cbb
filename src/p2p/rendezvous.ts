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
