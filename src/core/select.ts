import { UsageError } from './errors.js';
import type { FileEntry } from './manifest.js';

/**
 * --include / --exclude with the semantics of huggingface_hub's allow_patterns/ignore_patterns
 * (`filter_repo_objects`: Python's fnmatchcase over the whole repo path): `*` matches any
 * characters including "/", so `*.json` matches `sub/tokenizer.json` and `onnx/*` matches
 * everything below onnx/; a pattern ending in "/" means everything below that folder; "\" is a
 * path separator, as huggingface_hub 2.x reads it. Exclusions win.
 */
export function selectFiles(files: readonly FileEntry[], include: readonly string[] = [], exclude: readonly string[] = []): FileEntry[] {
  const inc = include.map(fnmatch);
  const exc = exclude.map(fnmatch);
  return files.filter((f) => (inc.length === 0 || inc.some((m) => m.test(f.path))) && !exc.some((m) => m.test(f.path)));
}

/** Longest pattern accepted, in characters: matching costs at most (name length × pattern length) steps. */
export const MAX_GLOB_LENGTH = 1024;

/** A compiled pattern. `test` never backtracks (see matchTokens). */
export interface Glob {
  readonly pattern: string;
  test(name: string): boolean;
  /** The same match, also returning the comparisons it made (tests bound the work with this). */
  measure(name: string): { matched: boolean; steps: number };
}

/** One pattern character: a literal code point, `?`, a `[...]` set, or a run of `*`. */
type Token =
  | { t: 'lit'; cp: number }
  | { t: 'any' }
  | { t: 'set'; negate: boolean; ranges: Array<[number, number]> }
  | { t: 'star' };

/**
 * Compile a pattern the way huggingface_hub does (`\` becomes `/`, a trailing `/` gets a `*`)
 * and then as Python's fnmatch.translate reads it: `*`, `?`, `[seq]`, `[!seq]`; an unclosed `[`
 * is a literal; everything else is literal. Code points, not UTF-16 units, as in Python.
 */
export function fnmatch(pattern: string): Glob {
  const cps = Array.from(pattern.replaceAll('\\', '/'), (c) => c.codePointAt(0)!);
  if (cps.length > MAX_GLOB_LENGTH) throw new UsageError(`pattern longer than ${MAX_GLOB_LENGTH} characters: ${JSON.stringify(pattern.slice(0, 40))}…`, 'ESF_BAD_GLOB');
  if (cps.at(-1) === SLASH) cps.push(STAR);
  const tokens = tokenize(cps);
  const compiled = split(tokens);
  const run = (name: string) => {
    const counter = { steps: 0 };
    // huggingface_hub normalises the path too (a listed path never has one: core/paths refuses it).
    const matched = matchTokens(compiled, Array.from(name.replaceAll('\\', '/'), (c) => c.codePointAt(0)!), counter);
    return { matched, steps: counter.steps };
  };
  return { pattern, test: (name) => run(name).matched, measure: run };
}

const SLASH = 0x2f;
const STAR = 0x2a;
const QUESTION = 0x3f;
const OPEN = 0x5b;
const CLOSE = 0x5d;
const BANG = 0x21;
const HYPHEN = 0x2d;

function tokenize(p: number[]): Token[] {
  const out: Token[] = [];
  for (let i = 0; i < p.length; ) {
    const c = p[i++]!;
    if (c === STAR) {
      if (out.at(-1)?.t !== 'star') out.push({ t: 'star' });
    } else if (c === QUESTION) out.push({ t: 'any' });
    else if (c === OPEN) {
      // As translate(): a "!" first negates, a "]" first (after the "!") is a member.
      let j = i;
      if (j < p.length && p[j] === BANG) j++;
      if (j < p.length && p[j] === CLOSE) j++;
      while (j < p.length && p[j] !== CLOSE) j++;
      if (j >= p.length) out.push({ t: 'lit', cp: OPEN });
      else {
        out.push(parseSet(p.slice(i, j)));
        i = j + 1;
      }
    } else out.push({ t: 'lit', cp: c });
  }
  return out;
}

/**
 * The members of `[stuff]`, exactly as Python reads the class translate() writes: translate cuts
 * `stuff` at the hyphens that make ranges (the search for the next one resumes two characters
 * after a range's end, so in `a-c-e` the second hyphen is a member), drops both ends of a reversed
 * range, and joins the pieces with range hyphens; re then reads that class left to right (a
 * member, then, if a range hyphen follows, the range's end).
 */
function parseSet(stuff: number[]): Token {
  const negate = stuff[0] === BANG;
  const body = negate ? stuff.slice(1) : stuff;
  const chunks: number[][] = [];
  let i = 0;
  let k = 1;
  for (;;) {
    k = body.indexOf(HYPHEN, k);
    if (k < 0) break;
    chunks.push(body.slice(i, k));
    i = k + 1;
    k += 3;
  }
  const last = body.slice(i);
  if (last.length > 0 || chunks.length === 0) chunks.push(last);
  else chunks[chunks.length - 1]!.push(HYPHEN);
  for (let c = chunks.length - 1; c > 0; c--) {
    const prev = chunks[c - 1]!;
    const cur = chunks[c]!;
    if (prev.length > 0 && cur.length > 0 && prev.at(-1)! > cur[0]!) {
      chunks[c - 1] = [...prev.slice(0, -1), ...cur.slice(1)];
      chunks.splice(c, 1);
    }
  }
  // The class as re sees it: members, with JOIN for each hyphen that means "range".
  const items: number[] = [];
  chunks.forEach((chunk, c) => {
    if (c > 0) items.push(JOIN);
    items.push(...chunk);
  });
  const ranges: Array<[number, number]> = [];
  for (let x = 0; x < items.length; ) {
    const lo = memberOf(items[x++]!);
    if (items[x] === JOIN && x + 1 < items.length) {
      ranges.push([lo, memberOf(items[x + 1]!)]);
      x += 2;
    } else ranges.push([lo, lo]);
  }
  return { t: 'set', negate, ranges };
}

/** A range hyphen in the place of a member is a literal hyphen to re. */
const JOIN = -1;
const memberOf = (item: number) => (item === JOIN ? HYPHEN : item);

/** A pattern as fixed-width pieces between stars: head, middle pieces, tail. */
interface Compiled {
  starred: boolean;
  head: Token[];
  middle: Token[][];
  tail: Token[];
}

function split(tokens: Token[]): Compiled {
  const pieces: Token[][] = [[]];
  for (const t of tokens) {
    if (t.t === 'star') pieces.push([]);
    else pieces.at(-1)!.push(t);
  }
  if (pieces.length === 1) return { starred: false, head: pieces[0]!, middle: [], tail: [] };
  return { starred: true, head: pieces[0]!, middle: pieces.slice(1, -1), tail: pieces.at(-1)! };
}

function matchOne(t: Token, cp: number): boolean {
  if (t.t === 'lit') return t.cp === cp;
  if (t.t === 'any') return true;
  if (t.t === 'set') {
    let hit = false;
    for (const [lo, hi] of t.ranges) if (cp >= lo && cp <= hi) hit = true;
    return hit !== t.negate;
  }
  return false;
}

/** Does the fixed-width `piece` match `name` at `at`? */
function matchesAt(piece: Token[], name: number[], at: number, counter: { steps: number }): boolean {
  for (let x = 0; x < piece.length; x++) {
    counter.steps++;
    if (!matchOne(piece[x]!, name[at + x]!)) return false;
  }
  return true;
}

/**
 * Without backtracking: the pieces between stars have fixed widths, so head and tail sit at the
 * ends and each middle piece may take its leftmost place after the previous one (a later place
 * never helps the pieces after it). Each name position is tried at most once per piece, so the
 * work is at most (name length + 1) × pattern length comparisons; the regex this replaces could
 * take exponential time (`*a*a*a*a*a*a*a*a*a*a*b` on a 40-character name: 71 s).
 */
function matchTokens(p: Compiled, name: number[], counter: { steps: number }): boolean {
  const n = name.length;
  if (!p.starred) return p.head.length === n && matchesAt(p.head, name, 0, counter);
  if (p.head.length + p.tail.length > n) return false;
  if (!matchesAt(p.head, name, 0, counter)) return false;
  const end = n - p.tail.length;
  if (!matchesAt(p.tail, name, end, counter)) return false;
  let pos = p.head.length;
  for (const piece of p.middle) {
    let found = false;
    for (; pos + piece.length <= end; pos++) {
      if (matchesAt(piece, name, pos, counter)) {
        found = true;
        break;
      }
    }
    if (!found) return false;
    pos += piece.length;
  }
  return true;
}
