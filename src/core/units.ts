import { UsageError } from './errors.js';

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  ki: 1024, kib: 1024, mi: 1024 ** 2, mib: 1024 ** 2, gi: 1024 ** 3, gib: 1024 ** 3, ti: 1024 ** 4, tib: 1024 ** 4,
};

/** Parse a byte size: `1048576`, `64MiB`, `8MB`, `1.5GiB`, `2Gi` (Kubernetes style). */
export function parseSize(input: string | number, what = 'size'): number {
  return Math.floor(sizeValue(input, what));
}

/** A size before rounding down to whole bytes (a rate must know whether it was 0 or only rounds to 0). */
function sizeValue(input: string | number, what: string): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) throw new UsageError(`invalid ${what} ${input}: expected a non-negative number of bytes`);
    return input;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(input);
  const unit = m?.[2]?.toLowerCase();
  const mult = unit === undefined ? undefined : SIZE_UNITS[unit];
  if (!m || mult === undefined) {
    throw new UsageError(`invalid ${what} ${JSON.stringify(input)}: expected a number with an optional unit such as 64MiB, 500MB or 2GiB`);
  }
  return Number(m[1]) * mult;
}

/** The highest rate limit accepted: 1 TB/s (8 Tbit/s) is beyond any link, so more is a typo, not a wish. */
export const MAX_RATE = 1e12;

/**
 * A rate in bytes per second, rounded down, where only a real zero means unlimited: a positive rate
 * that would round to 0 (`0.5`, `0.0001B/s`) is refused rather than silently lifting the limit, and
 * so is one above MAX_RATE (`1e308`). Both with code ESF_RATE_RANGE.
 */
function boundedRate(bps: number, input: string | number, what: string): number {
  if (bps === 0) return 0;
  const shown = typeof input === 'number' ? String(input) : JSON.stringify(input);
  if (bps < 1) throw new UsageError(`${what} ${shown} is below 1 B/s (use 0 for unlimited)`, 'ESF_RATE_RANGE');
  if (bps > MAX_RATE) throw new UsageError(`${what} ${shown} is above ${MAX_RATE / 1e12} TB/s (use 0 for unlimited)`, 'ESF_RATE_RANGE');
  return Math.floor(bps);
}

/**
 * Parse a transfer rate into bytes per second: `50MB/s`, `50MiB/s`, `400Mbit/s`, `1Gbps`, `1048576`.
 * `0`, `off`, `none` and `unlimited` mean no limit (returns 0).
 */
export function parseRate(input: string | number, what = 'rate'): number {
  if (typeof input === 'number') return boundedRate(sizeValue(input, what), input, what);
  const s = input.trim();
  if (['0', 'off', 'none', 'unlimited', ''].includes(s.toLowerCase())) return 0;
  // Bits are lowercase (Mbit/s, Mbps); 'MBps' is bytes, as in 50MBps.
  const bits = /^(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?)?(?:bit\/s|bps|bit)$/.exec(s);
  if (bits) {
    const mult = SIZE_UNITS[(bits[2] ?? '').toLowerCase()];
    if (mult === undefined) throw new UsageError(`invalid ${what} ${JSON.stringify(input)}`);
    return boundedRate((Number(bits[1]) * mult) / 8, input, what);
  }
  const bytes = /^(.*?)(?:\/s|ps)?$/i.exec(s)!;
  let bps: number;
  try {
    bps = sizeValue(bytes[1]!, what);
  } catch {
    throw new UsageError(`invalid ${what} ${JSON.stringify(input)}: expected e.g. 50MB/s, 50MiB/s or 400Mbit/s`);
  }
  return boundedRate(bps, input, what);
}

/** Parse a duration: `30m`, `10s`, `1h30m`, `250ms`, or a number of seconds. */
export function parseDuration(input: string | number, what = 'duration'): number {
  if (typeof input === 'number') return input * 1000;
  const s = input.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const n = Number(m[1]);
    total += m[2] === 'ms' ? n : m[2] === 's' ? n * 1e3 : m[2] === 'm' ? n * 60e3 : n * 3600e3;
    matched = re.lastIndex;
  }
  if (matched === 0 || matched !== s.length) {
    throw new UsageError(`invalid ${what} ${JSON.stringify(input)}: expected e.g. 30s, 30m or 1h`);
  }
  return total;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
