import { statSync } from 'node:fs';

/**
 * What a mounted secret file is now, seen through its symlinks: the kubelet updates a Secret volume
 * by writing a new timestamped directory and swapping the `..data` link the file's path goes
 * through, so the path stays and the inode behind it changes; an editor or `kubectl cp` changes
 * size or mtime. Throws as statSync does (a file being swapped may briefly vanish).
 */
export function fileVersion(path: string): string {
  const st = statSync(path);
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
}
