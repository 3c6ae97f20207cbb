import type { FileEntry } from './manifest.js';

/**
 * --include / --exclude with the semantics of huggingface_hub's allow_patterns/ignore_patterns
 * (Python's fnmatch over the whole repo path): `*` matches any characters including "/", so
 * `*.json` matches `sub/tokenizer.json` and `onnx/*` matches everything below onnx/; a pattern
 * ending in "/" means everything below that folder. Exclusions win.
 */
export function selectFiles(files: readonly FileEntry[], include: readonly string[] = [], exclude: readonly string[] = []): FileEntry[] {
  const inc = include.map(fnmatch);
  const exc = exclude.map(fnmatch);
  return files.filter((f) => (inc.length === 0 || inc.some((m) => m.test(f.path))) && !exc.some((m) => m.test(f.path)));
}

/** Python's fnmatch.translate: `*`, `?`, `[seq]`, `[!seq]`; everything else literal. */
export function fnmatch(pattern: string): RegExp {
  const p = pattern.endsWith('/') ? `${pattern}*` : pattern;
  let re = '';
  for (let i = 0; i < p.length; i++) {
    const c = p[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const close = p.indexOf(']', i + 2);
      if (close < 0) {
        re += '\\[';
        continue;
      }
      let body = p.slice(i + 1, close);
      const negate = body.startsWith('!');
      if (negate) body = body.slice(1);
      re += `[${negate ? '^' : ''}${body.replace(/\\/g, '\\\\').replace(/\^/g, '\\^')}]`;
      i = close;
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}
