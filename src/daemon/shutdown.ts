/**
 * How a part of the daemon stops: when the daemon's signal aborts, `stop` runs (once), and the
 * returned promise settles when it is done. It never rejects: a part that fails to stop cleanly
 * must not keep the others from stopping.
 */
export function onShutdown(signal: AbortSignal, stop: () => unknown): Promise<void> {
  return new Promise((resolve) => {
    const run = () => void Promise.resolve().then(stop).catch(() => undefined).then(() => resolve());
    if (signal.aborted) run();
    else signal.addEventListener('abort', run, { once: true });
  });
}
