/** Byte ranges `[start, end)`, kept sorted and merged. Pure helpers, no I/O. */
export type Range = [number, number];

/** Sorted, merged copy of `ranges` (empty ranges dropped). */
export function normalize(ranges: readonly Range[]): Range[] {
  const sorted = ranges.filter(([s, e]) => e > s).map(([s, e]) => [s, e] as Range).sort((a, b) => a[0] - b[0]);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push(r);
  }
  return out;
}

export function addRange(ranges: readonly Range[], start: number, end: number): Range[] {
  return normalize([...ranges, [start, end]]);
}

/** Remove `[start, end)` from a set. */
export function subtractRange(ranges: readonly Range[], start: number, end: number): Range[] {
  const out: Range[] = [];
  for (const [s, e] of ranges) {
    if (e <= start || s >= end) out.push([s, e]);
    else {
      if (s < start) out.push([s, start]);
      if (e > end) out.push([end, e]);
    }
  }
  return out;
}

/** True when one range of the (normalized) set contains all of `[start, end)`. */
export function covers(ranges: readonly Range[], start: number, end: number): boolean {
  if (end <= start) return true;
  for (const [s, e] of ranges) if (s <= start && e >= end) return true;
  return false;
}

/** True when `[start, end)` overlaps any range of the set. */
export function overlaps(ranges: readonly Range[], start: number, end: number): boolean {
  for (const [s, e] of ranges) if (s < end && e > start) return true;
  return false;
}

/** Parse a single `bytes=a-b` / `bytes=a-` request range against a size; undefined when absent or unusable. */
export function parseByteRange(h: string | undefined, size: number): { start: number; end: number } | 'invalid' | undefined {
  if (h === undefined) return undefined;
  const m = /^bytes=(\d+)-(\d*)$/.exec(h.trim());
  if (!m) return 'invalid';
  const start = Number(m[1]);
  const end = m[2] === '' ? size : Math.min(size, Number(m[2]) + 1);
  if (!Number.isSafeInteger(start) || start >= size || end <= start) return 'invalid';
  return { start, end };
}

/**
 * The range a peer asks for, against what this node holds of the blob: with the size known, as
 * parseByteRange; before it is known (nothing durable here yet), only a closed `bytes=a-b` can be
 * waited for. Undefined when there is no Range header.
 */
export function parseWantedRange(h: string | undefined, size: number | undefined): { start: number; end: number } | 'invalid' | undefined {
  if (h === undefined) return undefined;
  if (size !== undefined) return parseByteRange(h, size);
  const m = /^bytes=(\d+)-(\d+)$/.exec(h.trim());
  if (!m) return 'invalid';
  const start = Number(m[1]);
  const end = Number(m[2]) + 1;
  return Number.isSafeInteger(start) && Number.isSafeInteger(end) && end > start ? { start, end } : 'invalid';
}

/** Validate a list of ranges from the wire. */
export function isRangeList(v: unknown): v is Range[] {
  return (
    Array.isArray(v) &&
    v.every((r) => Array.isArray(r) && r.length === 2 && Number.isSafeInteger(r[0]) && Number.isSafeInteger(r[1]) && r[0] >= 0 && r[1] >= r[0])
  );
}
