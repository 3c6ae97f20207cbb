import { createHash, type Hash } from 'node:crypto';

/** Hashes content as it streams: SHA-256 always, and the git blob SHA-1 when asked for. */
export class BlobHasher {
  private readonly sha256: Hash = createHash('sha256');
  private readonly git: Hash | undefined;
  private bytes = 0;

  constructor(size: number, withGit: boolean) {
    if (withGit) {
      this.git = createHash('sha1');
      this.git.update(`blob ${size}\0`);
    }
  }

  update(chunk: Uint8Array): void {
    this.sha256.update(chunk);
    this.git?.update(chunk);
    this.bytes += chunk.length;
  }

  get length(): number {
    return this.bytes;
  }

  digest(): { sha256: string; gitOid?: string } {
    const out: { sha256: string; gitOid?: string } = { sha256: this.sha256.digest('hex') };
    if (this.git) out.gitOid = this.git.digest('hex');
    return out;
  }
}

/** Git's blob id for a whole buffer: sha1("blob <len>\0" + content). */
export function gitBlobId(content: Uint8Array): string {
  return createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
}

export function sha256Hex(content: Uint8Array | string): string {
  return createHash('sha256').update(content).digest('hex');
}

/**
 * Compare computed digests with what the hub promised. Returns undefined when they match, or
 * `{expected, found}` for the first mismatch. SHA-256 wins when both are known.
 */
export function checkDigests(
  expected: { sha256?: string; gitOid?: string },
  found: { sha256: string; gitOid?: string },
): { expected: string; found: string } | undefined {
  if (expected.sha256) {
    return expected.sha256 === found.sha256 ? undefined : { expected: `sha256:${expected.sha256}`, found: `sha256:${found.sha256}` };
  }
  if (expected.gitOid) {
    return expected.gitOid === found.gitOid ? undefined : { expected: `git:${expected.gitOid}`, found: `git:${found.gitOid ?? '?'}` };
  }
  return undefined;
}
