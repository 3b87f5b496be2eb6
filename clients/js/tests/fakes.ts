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

/** A realtime-js RealtimeChannel as far as `watch` uses it: like the real one, an instance joins once
 * (a second subscribe throws), and leaving takes it out of its client's channels. */
export class FakeChannel {
  handler: ((p: { new: unknown }) => void) | null = null;
  callbacks: ((status: string, err?: Error) => void)[] = [];
  filter: Record<string, string> | null = null;
  subscribes = 0;
  unsubscribes = 0;
  socket = 0; // the client's socket this channel joined on
  constructor(readonly topic: string, private readonly client: FakeSupabase) {}
  on(_type: string, filter: Record<string, string>, cb: (p: { new: unknown }) => void) {
    this.filter = filter;
    this.handler = cb;
    return this;
  }
  subscribe(cb: (status: string, err?: Error) => void) {
    if (this.subscribes > 0) {
      throw new Error("tried to join multiple times. 'join' can only be called a single time per channel instance");
    }
    this.subscribes++;
    this.socket = this.client.connect();
    this.callbacks.push(cb);
    return this;
  }
  unsubscribe() {
    this.unsubscribes++;
    this.client.live = this.client.live.filter((c) => c !== this);
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

/** A supabase-js client as far as `watch` uses it. As supabase-js does, channel() answers the live
 * channel of a topic (a new instance once it was left or removed); as realtime-js 2.119 does, removing
 * the last channel leaves the socket open (it closes after two idle heartbeats, unless a new channel
 * comes first), and only realtime.disconnect() closes it at once, so that the next join opens a new one. */
export class FakeSupabase {
  channels: FakeChannel[] = []; // every instance made, in order
  live: FakeChannel[] = []; // the client's channels now
  removed: FakeChannel[] = [];
  sockets = 0; // sockets opened so far
  open = false;
  reads = 0;
  row: StatusRow | null = null;
  readFails = false;
  queries: string[] = [];
  channel(topic: string) {
    const existing = this.live.find((c) => c.topic === topic);
    if (existing) return existing;
    const ch = new FakeChannel(topic, this);
    this.channels.push(ch);
    this.live.push(ch);
    return ch;
  }
  removeChannel(ch: FakeChannel) {
    this.removed.push(ch);
    this.live = this.live.filter((c) => c !== ch);
    return Promise.resolve("ok");
  }
  getChannels() {
    return this.live;
  }
  realtime = {
    disconnect: () => {
      this.open = false;
      return Promise.resolve("ok");
    },
  };
  /** The socket a join goes out on: the open one, or a new one. */
  connect(): number {
    if (!this.open) {
      this.open = true;
      this.sockets++;
    }
    return this.sockets;
  }
  from(table: string) {
    return {
      select: (cols: string) => ({
        eq: (col: string, value: string) => ({
          maybeSingle: () => {
            this.reads++;
            this.queries.push(`${table}?select=${cols}&${col}=eq.${value}`);
            return Promise.resolve(
              this.readFails ? { data: null, error: { message: "down" } } : { data: this.row, error: null },
            );
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
