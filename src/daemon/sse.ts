/**
 * Server-sent events, both sides of the wire: `formatEvent` for the daemon's event streams and
 * `SseParser` for whoever follows them (init, tests). One definition of the format, per the
 * WHATWG "event stream interpretation": lines end in LF, CR or CRLF; `:` starts a comment; a blank
 * line dispatches the event; `data` lines are joined with LF; one space after the colon is dropped.
 *
 * The parser decodes UTF-8 with a streaming TextDecoder: a network chunk may end in the middle of
 * a multi-byte character (ModelScope paths are often CJK), and only the decoder knows to hold the
 * first bytes back until the rest arrive.
 */

export interface SseEvent {
  /** The `event:` field; `message` when the server named none. */
  event: string;
  data: string;
  /** The last `id:` seen on the stream ('' when none). */
  id: string;
}

/** One event as the wire carries it. Multi-line data becomes one `data:` line per line. */
export function formatEvent(event: string, data: string): string {
  return `event: ${event}\n${data.split(/\r\n|\r|\n/).map((l) => `data: ${l}\n`).join('')}\n`;
}

/** A comment line: ignored by every client, it keeps idle proxies from closing the stream. */
export function formatComment(text: string): string {
  return `: ${text}\n\n`;
}

export class SseParser {
  private readonly decoder = new TextDecoder('utf-8');
  private buf = '';
  /** The previous chunk ended in CR: an LF at the start of the next one belongs to that line end. */
  private pendingCR = false;
  private event = '';
  private data: string[] = [];
  private id = '';
  /** The server's `retry:` wish in milliseconds, if it sent one. */
  retryMs: number | undefined;

  /** Feed raw bytes; returns the events they completed. */
  push(chunk: Uint8Array): SseEvent[] {
    return this.lines(this.decoder.decode(chunk, { stream: true }));
  }

  /** The stream ended: flush the decoder. An event without its blank line is dropped, as the spec says. */
  end(): SseEvent[] {
    const out = this.lines(this.decoder.decode());
    this.buf = '';
    this.data = [];
    this.event = '';
    return out;
  }

  private lines(text: string): SseEvent[] {
    if (this.pendingCR && text.startsWith('\n')) text = text.slice(1);
    this.pendingCR = false;
    this.buf += text;
    const out: SseEvent[] = [];
    let start = 0;
    for (let i = 0; i < this.buf.length; i++) {
      const c = this.buf.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const ev = this.line(this.buf.slice(start, i));
      if (ev) out.push(ev);
      if (c === 13) {
        if (i + 1 === this.buf.length) this.pendingCR = true;
        else if (this.buf.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    this.buf = this.buf.slice(start);
    return out;
  }

  private line(line: string): SseEvent | undefined {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.id = value;
    else if (field === 'retry' && /^\d+$/.test(value)) this.retryMs = Number(value);
    return undefined;
  }

  private dispatch(): SseEvent | undefined {
    const data = this.data;
    const event = this.event;
    this.data = [];
    this.event = '';
    if (data.length === 0) return undefined;
    return { event: event || 'message', data: data.join('\n'), id: this.id };
  }
}

/** Every event of a byte stream (an HTTP response body), in order. */
export async function* readEvents(body: AsyncIterable<Uint8Array>): AsyncGenerator<SseEvent> {
  const parser = new SseParser();
  for await (const chunk of body) yield* parser.push(chunk);
  yield* parser.end();
}
