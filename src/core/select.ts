import picomatch from 'picomatch';
import type { FileEntry } from './manifest.js';

/**
 * --include / --exclude, with the glob dialect huggingface_hub's allow_patterns users expect:
 * a pattern without "/" matches the file name at any depth ("*.json"), one with "/" matches the
 * whole path ("onnx/*"). Exclusions win.
 */
export function selectFiles(files: readonly FileEntry[], include: readonly string[] = [], exclude: readonly string[] = []): FileEntry[] {
  const inc = include.map(compile);
  const exc = exclude.map(compile);
  return files.filter((f) => (inc.length === 0 || inc.some((m) => m(f.path))) && !exc.some((m) => m(f.path)));
}

function compile(pattern: string): (path: string) => boolean {
  const p = pattern.endsWith('/') ? `${pattern}**` : pattern;
  const full = picomatch(p, { dot: true });
  if (p.includes('/')) return full;
  const base = picomatch(p, { dot: true, basename: true });
  return (path) => full(path) || base(path);
}
