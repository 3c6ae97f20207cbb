import cliProgress from 'cli-progress';
import { formatBytes } from '../core/units.js';
import type { PullEvent } from '../pull/index.js';
import { emitJson } from './context.js';

export type Reporter = (ref: string, e: PullEvent) => void;

/**
 * How a pull shows progress: NDJSON events on stdout when asked (--json) or when stdout is not a
 * terminal; a bar on stderr when it is one; nothing with --quiet.
 */
export function reporter(mode: { json: boolean; quiet: boolean }): { report: Reporter; stop(): void } {
  if (mode.json) {
    return {
      report: (ref, e) => {
        if (!mode.quiet || e.type === 'published') emitJson({ ...e, ref: e.type === 'resolved' ? e.ref : ref, time: new Date().toISOString() });
      },
      stop: () => undefined,
    };
  }
  if (mode.quiet || !process.stderr.isTTY) return { report: () => undefined, stop: () => undefined };
  let bar: cliProgress.SingleBar | undefined;
  let started = 0;
  const stop = () => {
    bar?.stop();
    bar = undefined;
  };
  return {
    report: (ref, e) => {
      if (e.type === 'resolved') {
        stop();
        started = Date.now();
        bar = new cliProgress.SingleBar(
          {
            format: `${ref} |{bar}| {percentage}% {done}/{size} {rate}/s eta {eta_formatted}`,
            stream: process.stderr,
            hideCursor: true,
            clearOnComplete: false,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(Math.max(1, e.bytesTotal), 0, { done: formatBytes(0), size: formatBytes(e.bytesTotal), rate: '0 B' });
      } else if (e.type === 'progress' && bar) {
        const secs = Math.max(0.001, (Date.now() - started) / 1000);
        bar.update(e.bytesDone, { done: formatBytes(e.bytesDone), rate: formatBytes(e.bytesDone / secs) });
      } else if (e.type === 'waiting') {
        process.stderr.write(`\n${ref}: another process (${e.holder}) is downloading this revision; waiting for it\n`);
      } else if (e.type === 'published') {
        if (bar) bar.update(bar.getTotal());
        stop();
      }
    },
    stop,
  };
}
