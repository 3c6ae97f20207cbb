/**
 * Where a tar archive ends. tar-stream skips all-zero header blocks forever (so that concatenated
 * archives read through), which let a valid bundle with a 20 GB sparse zero tail keep `bundle
 * import` busy for minutes (issue 12, item 11). POSIX ends an archive with two zero blocks where
 * a header is due; this walks the headers' sizes alongside the reader and says when that marker
 * has passed, so nothing after it is read (GNU tar ignores what follows, too).
 *
 * It only locates headers: tar-stream still parses and checks everything. Where the two could
 * disagree (a malformed archive), this can only end the input early, which the reader sees as a
 * truncated archive or missing blobs: never as content accepted. It follows what tar-stream
 * does with sizes: pax `size` records (local, over global), GNU long names, base-256 sizes, no
 * data after a directory header. Pure: no I/O.
 */

const BLOCK = 512;
/** Pax and GNU long-name data longer than this is not parsed (tar-stream refuses such headers). */
const MAX_LONG_HEADER = 1024 * 1024;

const PAX_LOCAL = 0x78; // 'x'
const PAX_GLOBAL = 0x67; // 'g'
const GNU_LONG_NAME = 0x4c; // 'L'
const GNU_LONG_LINK = 0x4b; // 'K'
const DIRECTORY = 0x35; // '5'
const REGULAR = [0, 0x30]; // NUL (old tar) or '0'

export class ArchiveEnd {
  /** Absolute offset of the next byte pushed. */
  private pos = 0;
  /** Where the next header block starts. */
  private nextHeader = 0;
  private readonly block = Buffer.alloc(BLOCK);
  private blockFill = 0;
  private zeroBlocks = 0;
  /** The data being read now belongs to a pax header (kept to find its `size`). */
  private paxKind: 'local' | 'global' | undefined;
  private paxData: Buffer[] = [];
  private paxLength = 0;
  private paxGlobal: Record<string, string> = {};
  /** A local pax header's `size`, for the entry header that follows it. */
  private pendingSize: number | undefined;
  private done = false;

  /** True once the end-of-archive marker has been pushed. */
  get ended(): boolean {
    return this.done;
  }

  /** Bytes of the archive proper, marker included (the reader needs no more). */
  get length(): number {
    return this.pos;
  }

  /** Take the next bytes of the input; returns how many of them belong to the archive. */
  push(chunk: Uint8Array): number {
    let i = 0;
    while (i < chunk.length && !this.done) {
      if (this.pos < this.nextHeader) {
        const n = Math.min(chunk.length - i, this.nextHeader - this.pos);
        if (this.paxKind) this.collectPax(chunk.subarray(i, i + n));
        i += n;
        this.pos += n;
        if (this.pos === this.nextHeader && this.paxKind) this.endPax();
        continue;
      }
      const n = Math.min(chunk.length - i, BLOCK - this.blockFill);
      this.block.set(chunk.subarray(i, i + n), this.blockFill);
      this.blockFill += n;
      i += n;
      this.pos += n;
      if (this.blockFill === BLOCK) {
        this.blockFill = 0;
        this.header();
      }
    }
    return i;
  }

  private header(): void {
    const start = this.pos - BLOCK;
    if (isNullBlock(this.block)) {
      this.nextHeader = this.pos;
      if (++this.zeroBlocks === 2) this.done = true;
      return;
    }
    this.zeroBlocks = 0;
    // Not a header where one is due: the walk ends here, and tar-stream refuses this block itself.
    if (!checksumHolds(this.block)) {
      this.done = true;
      return;
    }
    const type = this.block[156]!;
    let size = readSize(this.block.subarray(124, 136));
    if (type === PAX_LOCAL || type === PAX_GLOBAL || type === GNU_LONG_NAME || type === GNU_LONG_LINK) {
      if (type === PAX_LOCAL || type === PAX_GLOBAL) this.startPax(type === PAX_LOCAL ? 'local' : 'global');
    } else {
      if (this.pendingSize !== undefined) size = this.pendingSize;
      this.pendingSize = undefined;
      if (type === DIRECTORY || (REGULAR.includes(type) && nameEndsWithSlash(this.block))) size = 0;
    }
    // A size we cannot read ends the walk here: tar-stream refuses the header anyway.
    if (!Number.isSafeInteger(size) || size < 0) {
      this.done = true;
      return;
    }
    this.nextHeader = start + BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (this.paxKind && this.nextHeader === this.pos) this.endPax();
  }

  private startPax(kind: 'local' | 'global'): void {
    this.paxKind = kind;
    this.paxData = [];
    this.paxLength = 0;
  }

  private collectPax(bytes: Uint8Array): void {
    if (this.paxLength + bytes.length <= MAX_LONG_HEADER) this.paxData.push(Buffer.from(bytes));
    this.paxLength += bytes.length;
  }

  /** As tar-stream: a local pax header's records over the global ones; its `size` is the next entry's. */
  private endPax(): void {
    const records = this.paxLength <= MAX_LONG_HEADER ? decodePax(Buffer.concat(this.paxData)) : {};
    if (this.paxKind === 'global') this.paxGlobal = records;
    else {
      // tar-stream takes any non-empty `size` record, even "0" or one that is not a number (which
      // it then refuses, as header() does).
      const merged = { ...this.paxGlobal, ...records };
      this.pendingSize = merged.size ? parseInt(merged.size, 10) : undefined;
    }
    this.paxKind = undefined;
    this.paxData = [];
  }
}

/**
 * A block tar-stream reads as no header at all and skips: every byte zero except, possibly, the
 * checksum field (its sum then equals that of an all-zero block). The end-of-archive marker is
 * two of these; counting the looser kind means a tail of them cannot pass for something else.
 */
function isNullBlock(block: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0 && (i < 148 || i >= 156)) return false;
  return true;
}

/** The header checksum: the sum of its bytes with the checksum field read as spaces, in octal in that field. */
function checksumHolds(block: Buffer): boolean {
  let sum = 8 * 0x20;
  for (let i = 0; i < BLOCK; i++) if (i < 148 || i >= 156) sum += block[i]!;
  return sum === readSize(block.subarray(148, 156));
}

/** The size field: octal text (optionally space- or NUL-padded) or GNU base-256. */
function readSize(field: Buffer): number {
  if (field[0]! & 0x80) {
    if (field[0] !== 0x80) return NaN; // negative base-256
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return n;
  }
  let s = 0;
  while (s < field.length && field[s] === 0x20) s++;
  let e = field.indexOf(0x20, s);
  if (e < 0) e = field.length;
  while (s < e && field[s] === 0) s++;
  if (s === e) return 0;
  return parseInt(field.subarray(s, e).toString('latin1'), 8);
}

function nameEndsWithSlash(block: Buffer): boolean {
  const name = block.subarray(0, 100);
  const nul = name.indexOf(0);
  const end = nul < 0 ? 100 : nul;
  return end > 0 && name[end - 1] === 0x2f;
}

/** Pax records `LEN key=value\n`, read as tar-stream reads them. */
function decodePax(buf: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  while (buf.length > 0) {
    let i = 0;
    while (i < buf.length && buf[i] !== 0x20) i++;
    const len = parseInt(buf.subarray(0, i).toString(), 10);
    if (!len) return out;
    const record = buf.subarray(i + 1, len - 1).toString();
    const eq = record.indexOf('=');
    if (eq === -1) return out;
    out[record.slice(0, eq)] = record.slice(eq + 1);
    buf = buf.subarray(len);
  }
  return out;
}
