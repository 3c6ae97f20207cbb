import cliProgress from 'cli-progress';
import { formatBytes } from '../core/units.js';
import type { TransferEvent } from '../core/transfer.js';
import type { PullEvent } from '../pull/index.js';
import { emitJson } from './context.js';

export type Reporter = (ref: string, e: PullEvent) => void;

/**
 * How a pull shows progress: NDJSON events on stdout when asked (--json) or when stdout is not a
 * terminal; a status line and a bar on stderr when it is one; nothing with --quiet.
 */
export interface ProgressOutput {
  report: Reporter;
  /** The engine's own events (bytes as they arrive), for the rate. */
  transfer(e: TransferEvent): void;
  stop(): void;
}

export function reporter(mode: { json: boolean; quiet: boolean }): ProgressOutput {
  const none = () => undefined;
  if (mode.json) {
    return {
      report: (ref, e) => {
        if (!mode.quiet || e.type === 'published') emitJson({ ...e, ref: e.type === 'resolved' || e.type === 'resolving' ? e.ref : ref, time: new Date().toISOString() });
      },
      transfer: none,
      stop: none,
    };
  }
  if (mode.quiet || !process.stderr.isTTY) return { report: none, transfer: none, stop: none };
  const tty = new TerminalProgress(process.stderr);
  return { report: (ref, e) => tty.report(ref, e), transfer: (e) => tty.transfer(e), stop: () => tty.stop() };
}

/** `1m05s`, `42s`; for an ETA. */
export function formatEta(seconds: number): string {
  const s = Math.max(1, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/**
 * What a person at a terminal sees. Something is on screen within a second of starting, whatever
 * the hub does: a status line ("resolving the revision", "connecting", "waiting for ...") that
 * counts its seconds until bytes flow and the bar replaces it. The bar starts at the bytes already
 * held (complete files, and the chunks a resumed partial file kept), never from zero; its rate and
 * ETA come from the bytes that arrived in this run (the engine's own count), so there is no
 * "eta 0s" before anything has moved. Retries are printed above it as they happen.
 */
export class TerminalProgress {
  private bar: cliProgress.SingleBar | undefined;
  private status: { text: string; since: number; timer: NodeJS.Timeout } | undefined;
  private current = { ref: '', done: 0, total: 0 };
  /** Bytes that arrived in this run, and when the first did: the base of rate and ETA. */
  private received: { bytes: number; since: number } | undefined;
  private lastNotice: string | undefined;

  constructor(private readonly out: NodeJS.WriteStream, private readonly now: () => number = Date.now) {}

  report(ref: string, e: PullEvent): void {
    switch (e.type) {
      case 'resolving':
        return this.setStatus(`${ref}: resolving the revision`);
      case 'resolved':
        this.stop();
        this.current = { ref, done: 0, total: e.bytesTotal };
        return this.setStatus(`${ref}: ${e.files} files, ${formatBytes(e.bytesTotal)}; connecting`);
      case 'progress':
        this.current.done = e.bytesDone;
        this.current.total = e.bytesTotal;
        this.bar?.setTotal(Math.max(1, e.bytesTotal));
        this.bar?.update(e.bytesDone, this.payload());
        return;
      case 'waiting':
        return this.notice(`${ref}: waiting for another process to download it (${e.holder})`);
      case 'retry':
        return this.line(`${ref}: ${e.file}: retry ${e.attempt}${e.of ? ` of ${e.of}` : ''} in ${Math.max(1, Math.round(e.delayMs / 1000))} s (${e.reason})`);
      case 'verifying':
        if (!this.bar) this.setStatus(`${ref}: verifying`);
        return;
      case 'published':
        this.current.done = this.current.total;
        this.bar?.update(this.bar.getTotal(), this.payload());
        return this.stop();
      default:
        return;
    }
  }

  /** The engine's events: the first bytes to arrive bring up the bar. */
  transfer(e: TransferEvent): void {
    if (e.type !== 'progress') return;
    this.received ??= { bytes: 0, since: this.now() };
    this.received.bytes += e.bytes;
    if (!this.bar) this.startBar();
  }

  stop(): void {
    this.clearStatus();
    this.bar?.stop();
    this.bar = undefined;
    this.received = undefined;
    this.lastNotice = undefined;
  }

  /** A state worth a line: the status line before the bar, a line above it once the bar is up. */
  private notice(text: string): void {
    if (!this.bar) return this.setStatus(text);
    if (text === this.lastNotice) return;
    this.lastNotice = text;
    this.line(text);
  }

  /** A line that counts its seconds, rewritten in place until something replaces it (the same text keeps counting). */
  private setStatus(text: string): void {
    if (this.status?.text === text) return;
    this.clearStatus();
    const since = this.now();
    const draw = () => this.out.write(`\r\x1b[K${text} (${Math.floor((this.now() - since) / 1000)} s)`);
    const timer = setInterval(draw, 1_000);
    timer.unref();
    this.status = { text, since, timer };
    draw();
  }

  private clearStatus(): void {
    if (!this.status) return;
    clearInterval(this.status.timer);
    this.status = undefined;
    this.out.write('\r\x1b[K');
  }

  /** A message above the bar (or the status line), which is then drawn again below it. */
  private line(text: string): void {
    this.out.write(`\r\x1b[K${text}\n`);
    if (this.bar) this.bar.render();
    else if (this.status) this.out.write(`${this.status.text} (${Math.floor((this.now() - this.status.since) / 1000)} s)`);
  }

  private startBar(): void {
    this.clearStatus();
    const { ref, done, total } = this.current;
    this.bar = new cliProgress.SingleBar(
      {
        format: `${ref} |{bar}| {percentage}% {done}/{size} {rate} eta {timeLeft}`,
        stream: this.out,
        hideCursor: true,
        clearOnComplete: false,
        // Our own signal handling stops the bar (and the process) on Ctrl-C.
        gracefulExit: false,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(Math.max(1, total), done, this.payload());
  }

  private payload(): Record<string, string> {
    const { done, total } = this.current;
    const secs = this.received ? (this.now() - this.received.since) / 1000 : 0;
    const rate = this.received && secs >= 0.5 ? this.received.bytes / secs : 0;
    return {
      done: formatBytes(done),
      size: formatBytes(total),
      rate: rate > 0 ? `${formatBytes(rate)}/s` : '-',
      timeLeft: done >= total ? '0s' : rate > 0 ? formatEta((total - done) / rate) : '-',
    };
  }
}
