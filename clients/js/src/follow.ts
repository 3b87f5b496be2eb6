// Keeping the newest row of one session. Realtime, the read after subscribing and polling can each
// deliver the same change, late or twice: a row older than the last one (by seq) is dropped, and so
// is a repeat (same seq, status and progress), so the app sees updates in order, never going back.
// The same rule as vibeinsight/cli/upload.py's RowFollower.
import { type StatusRow, TERMINAL } from "./types.ts";

export class StatusFollower {
  row: StatusRow | null = null;

  /** true when `row` is news (and is now the newest row). */
  offer(row: StatusRow | null | undefined): boolean {
    if (!row || typeof row !== "object" || !row.status) return false;
    const last = this.row;
    if (last) {
      const seq = Number(row.seq ?? 0), lastSeq = Number(last.seq ?? 0);
      if (seq < lastSeq || (seq === lastSeq && row.status === last.status && row.progress === last.progress)) {
        return false;
      }
    }
    this.row = row;
    return true;
  }

  get done(): boolean {
    return this.row !== null && TERMINAL.includes(this.row.status);
  }
}

/** Timers, replaceable in tests. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}
export const REAL_CLOCK: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as number),
};

/**
 * Hands rows to `deliver` at most once per `intervalMs` (the client-side throttle): inside a window
 * only the newest row waits, and is delivered when the window ends; a terminal row goes at once.
 */
export class Throttle {
  intervalMs = 0;
  private last = -Infinity;
  private pending: StatusRow | null = null;
  private timer: unknown = null;

  constructor(private readonly clock: Clock, private readonly deliver: (row: StatusRow) => void) {}

  push(row: StatusRow): void {
    const wait = this.last + this.intervalMs - this.clock.now();
    if (wait <= 0 || TERMINAL.includes(row.status)) {
      this.cancel();
      this.send(row);
      return;
    }
    this.pending = row;
    this.timer ??= this.clock.setTimeout(() => {
      this.timer = null;
      const row = this.pending;
      this.pending = null;
      if (row) this.send(row);
    }, wait);
  }

  cancel(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.pending = null;
  }

  private send(row: StatusRow): void {
    this.last = this.clock.now();
    this.deliver(row);
  }
}
