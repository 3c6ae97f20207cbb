/**
 * Plain counters of the swarm, for the daemon's Prometheus registry to read at scrape time
 * (suggested names in docs/p2p.md). Bytes from the origin are counted by the engine's progress
 * events; here are the peer side's numbers.
 */
export class P2PCounters {
  /** Bytes this node received from peers (handed to the engine). */
  bytesFromPeers = 0;
  /** Bytes this node served to peers. */
  bytesServed = 0;
  /** Data requests served (206/200). */
  uploads = 0;
  /** Data requests refused because the upload concurrency was exhausted (503). */
  uploadsRejected = 0;
  /** Requests refused for a missing or wrong peer token (401). */
  unauthorized = 0;
  /** Chunk requests that went to the origin after waiting for a peer that did not deliver in time. */
  peerTimeouts = 0;
  /** Peer requests that failed (connection refused/reset, bad status, short body). */
  peerErrors = 0;
  /** Peers quarantined for serving bytes that did not match the verified file. */
  quarantines = 0;
  /** Blob status requests this node sent (control traffic; data requests are not counted). */
  statusRequests = 0;

  private readonly listeners = new Set<(name: keyof P2PCounterValues, delta: number) => void>();

  add(name: keyof P2PCounterValues, delta = 1): void {
    this[name] += delta;
    for (const l of this.listeners) l(name, delta);
  }

  /** Be told of every increment (e.g. to feed prom-client counters). Returns an unsubscribe. */
  onAdd(fn: (name: keyof P2PCounterValues, delta: number) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  snapshot(): P2PCounterValues {
    const { bytesFromPeers, bytesServed, uploads, uploadsRejected, unauthorized, peerTimeouts, peerErrors, quarantines, statusRequests } = this;
    return { bytesFromPeers, bytesServed, uploads, uploadsRejected, unauthorized, peerTimeouts, peerErrors, quarantines, statusRequests };
  }
}

export interface P2PCounterValues {
  bytesFromPeers: number;
  bytesServed: number;
  uploads: number;
  uploadsRejected: number;
  unauthorized: number;
  peerTimeouts: number;
  peerErrors: number;
  quarantines: number;
  statusRequests: number;
}
