import type { ModelRef } from './ref.js';

/** One file of a pinned revision, as the hub lists it. */
export interface FileEntry {
  /** Repo-relative POSIX path, validated. */
  path: string;
  size: number;
  /** Hex SHA-256 of the content when the hub provides one (HF LFS files, ModelScope files). */
  sha256?: string;
  /** Git blob SHA-1 (HF lists one for every file; the only hash small HF files carry). */
  gitOid?: string;
  /** Stored through LFS (HF) — decides the HF cache blob name and whether the resolve URL redirects. */
  lfs: boolean;
}

/** A revision pinned to a commit with its complete file list. */
export interface Manifest {
  ref: ModelRef;
  commit: string;
  files: FileEntry[];
}

/** The name huggingface_hub gives a blob in its cache: the normalised ETag (sha256 for LFS, git oid otherwise). */
export function hfEtag(f: FileEntry): string {
  if (f.lfs && f.sha256) return f.sha256;
  if (f.gitOid) return f.gitOid;
  if (f.sha256) return f.sha256;
  throw new Error(`file ${f.path} has no hash to name its blob`);
}

export function totalBytes(files: readonly FileEntry[]): number {
  return files.reduce((n, f) => n + f.size, 0);
}
