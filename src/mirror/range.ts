/**
 * One `Range: bytes=...` header against a file of `size` bytes, as RFC 9110 reads it: `a-b`,
 * `a-` and the suffix form `-n`. Several ranges, or a header we cannot read, mean "send it all"
 * (a server may always ignore Range); a start at or past the end is unsatisfiable (416).
 * Pure: no I/O.
 */
export type ByteRange = { start: number; end: number };

export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (header === undefined || size === 0) return undefined;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size };
  }
  const start = Number(m[1]);
  if (!Number.isSafeInteger(start)) return undefined;
  if (m[2] !== '' && Number(m[2]) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  const end = m[2] === '' ? size : Math.min(size, Number(m[2]) + 1);
  return { start, end };
}
