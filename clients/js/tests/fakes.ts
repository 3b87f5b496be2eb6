// Test doubles: a manual clock, and a supabase-js client whose channels the test drives by hand.
import type { Clock } from "../src/follow.ts";
import type { StatusRow } from "../src/types.ts";

export class ManualClock implements Clock {
  t = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();
  private ids = 0;
  now() {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number) {
    const id = ++this.ids;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown) {
    this.timers.delete(h as number);
  }
  /** Moves time on by `ms`, firing due timers in order (and letting their promises settle). */
  async advance(ms: number) {
    const end = this.t + ms;
    for (;;) {
      await settle();
      const due = [...this.timers].filter(([, v]) => v.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = due[1].at;
      due[1].fn();
    }
    this.t = end;
    await settle();
  }
  pending(): number[] {
    return [...this.timers.values()].map((v) => v.at - this.t).sort((a, b) => a - b);
  }
}

export async function settle() {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

export class FakeChannel {
  handler: ((p: { new: unknown }) => void) | null = null;
  callbacks: ((status: string, err?: Error) => void)[] = [];
  filter: Record<string, string> | null = null;
  subscribes = 0;
  unsubscribes = 0;
  constructor(readonly topic: string) {}
  on(_type: string, filter: Record<string, string>, cb: (p: { new: unknown }) => void) {
    this.filter = filter;
    this.handler = cb;
    return this;
  }
  subscribe(cb: (status: string, err?: Error) => void) {
    this.subscribes++;
    this.callbacks.push(cb);
    return this;
  }
  unsubscribe() {
    this.unsubscribes++;
    return Promise.resolve("ok");
  }
  /** The server's answer to the newest join. */
  answer(status: string, err?: Error) {
    this.callbacks[this.callbacks.length - 1](status, err);
  }
  send(row: StatusRow) {
    this.handler?.({ new: row });
  }
}

export class FakeSupabase {
  channels: FakeChannel[] = [];
  removed: FakeChannel[] = [];
  reads = 0;
  row: StatusRow | null = null;
  readFails = false;
  queries: string[] = [];
  channel(topic: string) {
    const ch = new FakeChannel(topic);
    this.channels.push(ch);
    return ch;
  }
  removeChannel(ch: FakeChannel) {
    this.removed.push(ch);
    return Promise.resolve("ok");
  }
  from(table: string) {
    return {
      select: (cols: string) => ({
        eq: (col: string, value: string) => ({
          maybeSingle: () => {
            this.reads++;
            this.queries.push(`${table}?select=${cols}&${col}=eq.${value}`);
            return Promise.resolve(this.readFails
              ? { data: null, error: { message: "down" } }
              : { data: this.row, error: null });
          },
        }),
      }),
    };
  }
  get last(): FakeChannel {
    return this.channels[this.channels.length - 1];
  }
}

export function row(seq: number, status: StatusRow["status"], progress: number, stage = "transcribe"): StatusRow {
  return { session_id: "s-1", status, stage, progress, seq, error_code: null, error_message: null, flow_run_id: "f" };
}
