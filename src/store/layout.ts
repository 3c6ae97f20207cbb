import { join, relative, sep } from 'node:path';
import { repoKey, type Hub } from '../core/ref.js';

export interface RepoKeyParts {
  hub: Hub;
  org: string;
  name: string;
}

export interface ViewPaths {
  plain: string;
  hf?: string;
  ms?: string;
}

/**
 * Where everything lives in a store: three views for readers (huggingface_hub's cache,
 * ModelScope's cache, plain directories) and one hidden folder that only swift-fetch reads:
 *
 *   .swift-fetch/blobs/sha256/<2 hex>/<sha256>   content, read-only, hard-linked into the views
 *   .swift-fetch/aliases/git/<oid>               sha256 of a blob known by its git oid (a cache)
 *   .swift-fetch/records/<hub--org--name>/<commit>.json  what a publish verified (+ .used stamp)
 *   .swift-fetch/refs/<hub--org--name>/<revision>        the commit a revision named when pulled
 *   .swift-fetch/partial, tmp, trash, leases             work in progress, coordination
 *
 * Paths only; no I/O. Every verb of the store (blobs, publish, records, remove, sweep) takes one.
 */
export class StoreLayout {
  readonly root: string;
  readonly internal: string;

  constructor(root: string) {
    this.root = root;
    this.internal = join(root, '.swift-fetch');
  }

  get partialDir(): string {
    return join(this.internal, 'partial');
  }
  get leaseDir(): string {
    return join(this.internal, 'leases');
  }
  get tmpDir(): string {
    return join(this.internal, 'tmp');
  }
  get blobsDir(): string {
    return join(this.internal, 'blobs', 'sha256');
  }
  get aliasDir(): string {
    return join(this.internal, 'aliases', 'git');
  }
  get recordsDir(): string {
    return join(this.internal, 'records');
  }
  get trashDir(): string {
    return join(this.internal, 'trash');
  }

  blobPath(sha256: string): string {
    return join(this.blobsDir, sha256.slice(0, 2), sha256);
  }

  hfRepoDir(key: RepoKeyParts): string {
    return join(this.root, 'huggingface', 'hub', `models--${key.org}--${key.name}`);
  }
  msRepoDir(key: RepoKeyParts): string {
    return join(this.root, 'modelscope', 'models', `${key.org}--${key.name}`);
  }
  plainDir(key: RepoKeyParts, commit: string): string {
    return join(this.root, 'models', key.hub, key.org, key.name, commit);
  }

  recordDir(key: RepoKeyParts): string {
    return join(this.recordsDir, repoKey(key));
  }
  recordPath(key: RepoKeyParts, commit: string): string {
    return join(this.recordDir(key), `${commit}.json`);
  }
  usedPath(key: RepoKeyParts, commit: string): string {
    return join(this.recordDir(key), `${commit}.used`);
  }
  localRefDir(key: RepoKeyParts): string {
    return join(this.internal, 'refs', repoKey(key));
  }
  localRefPath(key: RepoKeyParts, revision: string): string {
    return join(this.localRefDir(key), encodeURIComponent(revision));
  }

  /** The views of one revision under this store's root (whatever root it was published under). */
  viewPaths(key: RepoKeyParts, commit: string): ViewPaths {
    const paths: ViewPaths = { plain: this.plainDir(key, commit) };
    if (key.hub === 'hf') paths.hf = join(this.hfRepoDir(key), 'snapshots', commit);
    else if (key.hub === 'ms') paths.ms = join(this.msRepoDir(key), 'snapshots', commit);
    return paths;
  }

  /** View paths relative to the root, as records keep them (the store is mounted at different paths). */
  relativePaths(paths: ViewPaths): ViewPaths {
    const rel = (p: string) => relative(this.root, p).split(sep).join('/');
    const out: ViewPaths = { plain: rel(paths.plain) };
    if (paths.hf) out.hf = rel(paths.hf);
    if (paths.ms) out.ms = rel(paths.ms);
    return out;
  }
}
