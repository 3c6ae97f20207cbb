/**
 * Pulls that someone is waiting on (an init container, a mirror client, a person at a terminal)
 * go before background pre-pulls. One gate per process: while any urgent transfer runs, background
 * transfers together keep at most `backgroundWhileUrgent` origin requests open (they finish the
 * ones they have, no request is cut), so the urgent one gets the rate limit's tokens and the
 * origin's attention; with no urgent transfer, background ones run unbounded (by the gate).
 */
import { queuedWait } from '../core/wakeups.js';

export type TransferPriority = 'urgent' | 'background';

export class PriorityGate {
  private urgent = 0;
  private backgroundOpen = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(private readonly backgroundWhileUrgent = 2) {}

  /** An urgent transfer runs; call the returned function when it ends. */
  enterUrgent(): () => void {
    this.urgent++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.urgent--;
      this.wake();
    };
  }

  /** One origin request of a background transfer; resolves with its release. */
  async background(signal: AbortSignal): Promise<() => void> {
    while (this.urgent > 0 && this.backgroundOpen >= this.backgroundWhileUrgent) {
      signal.throwIfAborted();
      await queuedWait(this.waiters, signal);
    }
    this.backgroundOpen++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.backgroundOpen--;
      this.wake();
    };
  }

  /** Open background requests right now (for tests and metrics). */
  get backgroundInFlight(): number {
    return this.backgroundOpen;
  }

  private wake(): void {
    // Every waiter re-checks the condition; the ones that still may not go wait again.
    for (const w of this.waiters.splice(0)) w();
  }
}

/** The process's gate, for engines not given one. */
export const processGate = new PriorityGate();
