// Following one session's processing_status row: one Realtime channel per session, filtered on
// session_id (RLS lets a user see only their own rows), the row read once after subscribing (Realtime
// does not replay what changed before the join), Realtime's limits handled as the design says
// (realtime.ts), and the row polled over REST while Realtime is down, switching back when it returns.
import { type Clock, REAL_CLOCK, StatusFollower, Throttle } from "./follow.ts";
import { type BackoffPolicy, classify, decide, DEFAULT_BACKOFF, type Trouble } from "./realtime.ts";
import { ROW_COLUMNS, type StatusRow } from "./types.ts";

/** The part of a realtime-js RealtimeChannel used here. */
export interface ChannelLike {
  on(
    type: "postgres_changes",
    filter: { event: "*"; schema: string; table: string; filter: string },
    callback: (payload: { new: unknown }) => void,
  ): ChannelLike;
  subscribe(callback: (status: string, err?: Error) => void): ChannelLike;
  unsubscribe(): Promise<unknown>;
}

/** The part of a supabase-js SupabaseClient used here (supabase-js is the app's: a peer dependency). */
export interface SupabaseLike {
  // deno-lint-ignore no-explicit-any
  channel(name: string, opts?: any): any;
  // deno-lint-ignore no-explicit-any
  removeChannel(channel: any): Promise<unknown>;
  getChannels(): unknown[];
  realtime: { disconnect(): unknown };
  // deno-lint-ignore no-explicit-any
  from(table: string): any;
}

export type Mode = "connecting" | "realtime" | "polling" | "stopped";

export interface WatchOptions {
  /** ms between reads of the row while Realtime is down (default 3000) */
  pollMs?: number;
  /** while Realtime is up the row is still read every pollMs × this, as a safety net (default 5) */
  safetyPollFactor?: number;
  /** least ms between two updates handed to onUpdate (default 0; tenant_events raises it) */
  throttleMs?: number;
  backoff?: Partial<BackoffPolicy>;
  /** told when the source of updates changes */
  onMode?: (mode: Mode, why?: Trouble) => void;
  /** told of each Realtime trouble and the decision taken (logs, tests) */
  onTrouble?: (trouble: Trouble, delayMs: number, action: "reconnect" | "reuse") => void;
  random?: () => number;
  clock?: Clock;
}

export interface Watch {
  /** The terminal row (COMPLETED, FAILED, CRASHED, CANCELLED). */
  readonly done: Promise<StatusRow>;
  readonly mode: Mode;
  /** The newest row seen. */
  readonly row: StatusRow | null;
  stop(): Promise<void>;
}

export const TABLE = "processing_status";

/** Follows `sessionId` until it ends; onUpdate gets each newer row, in order. */
export function watch(
  supabase: SupabaseLike,
  sessionId: string,
  onUpdate: (row: StatusRow) => void,
  opts: WatchOptions = {},
): Watch {
  const clock = opts.clock ?? REAL_CLOCK;
  const random = opts.random ?? Math.random;
  const policy = { ...DEFAULT_BACKOFF, ...opts.backoff };
  const pollMs = opts.pollMs ?? 3000;
  const safety = opts.safetyPollFactor ?? 5;
  const follower = new StatusFollower();
  const throttle = new Throttle(clock, onUpdate);
  throttle.intervalMs = opts.throttleMs ?? 0;

  let mode: Mode = "connecting";
  let channel: ChannelLike | null = null;
  let generation = 0; // callbacks of an abandoned subscription are ignored
  let troubles = 0; // in a row, since the last successful join
  let pollTimer: unknown = null;
  let joinTimer: unknown = null;
  let resolveDone!: (row: StatusRow) => void;
  const done = new Promise<StatusRow>((r) => (resolveDone = r));

  const setMode = (next: Mode, why?: Trouble) => {
    if (mode === next || mode === "stopped") return;
    mode = next;
    opts.onMode?.(next, why);
  };

  const offer = (row: unknown) => {
    if (mode === "stopped" || !follower.offer(row as StatusRow)) return;
    throttle.push(follower.row!);
    if (follower.done) {
      resolveDone(follower.row!);
      void stop();
    }
  };

  const readRow = async () => {
    try {
      const { data, error } = await supabase.from(TABLE).select(ROW_COLUMNS).eq("session_id", sessionId).maybeSingle();
      if (!error) offer(data);
    } catch {
      // a failed read is retried at the next tick
    }
  };

  const schedulePoll = (ms: number) => {
    if (pollTimer !== null) clock.clearTimeout(pollTimer);
    pollTimer = clock.setTimeout(async () => {
      pollTimer = null;
      await readRow();
      if (mode !== "stopped") schedulePoll(mode === "realtime" ? pollMs * safety : pollMs);
    }, ms);
  };

  const join = () => {
    joinTimer = null;
    if (mode === "stopped") return;
    const mine = ++generation;
    // A channel instance joins once (realtime-js refuses a second subscribe), so each join takes the
    // client's channel of this topic: supabase.channel() answers the live one, or a new one once the
    // last was left (reuse: on the same socket) or removed (reconnect: on a new socket).
    channel = (supabase.channel(`${TABLE}:${sessionId}`) as ChannelLike).on("postgres_changes", {
      event: "*",
      schema: "public",
      table: TABLE,
      filter: `session_id=eq.${sessionId}`,
    }, (payload) => offer(payload.new));
    try {
      channel.subscribe((status, err) => {
        if (mine !== generation || mode === "stopped") return;
        if (status === "SUBSCRIBED") {
          troubles = 0;
          setMode("realtime");
          void readRow(); // what changed before the join
          schedulePoll(pollMs * safety);
        } else {
          void trouble(err ?? status);
        }
      });
    } catch (err) {
      void trouble(err); // a channel that could not be left: "other", so the next join starts afresh
    }
  };

  const trouble = async (err: unknown) => {
    generation++;
    const kind = classify(err);
    const d = decide(kind, troubles++, throttle.intervalMs, random, policy);
    throttle.intervalMs = d.throttleMs;
    opts.onTrouble?.(kind, d.delayMs, d.action);
    setMode("polling", kind);
    void readRow();
    schedulePoll(pollMs);
    const old = channel;
    if (d.action === "reconnect") channel = null;
    try {
      // reconnect: remove the channel and close the socket when no other channel of the app is on it
      // (realtime-js keeps an empty socket for two heartbeats, and a new channel keeps it on), so the
      // next join opens a new one; reuse: leave the channel (no rejoin of its own) and join its topic
      // again on the same socket
      if (old && d.action === "reconnect") {
        await supabase.removeChannel(old);
        if (supabase.getChannels().length === 0) await supabase.realtime.disconnect();
      } else if (old) {
        await old.unsubscribe();
      }
    } catch {
      // the socket is already gone
    }
    if (mode !== "stopped") joinTimer = clock.setTimeout(join, d.delayMs);
  };

  const stop = async () => {
    if (mode === "stopped") return;
    mode = "stopped";
    opts.onMode?.("stopped");
    generation++;
    for (const t of [pollTimer, joinTimer]) if (t !== null) clock.clearTimeout(t);
    pollTimer = joinTimer = null;
    if (!follower.done) throttle.cancel();
    const old = channel;
    channel = null;
    try {
      if (old) await supabase.removeChannel(old);
    } catch {
      // closing a socket that already failed
    }
  };

  join();
  void readRow(); // the row as it is now, before (or without) Realtime
  schedulePoll(pollMs);
  return {
    done,
    get mode() {
      return mode;
    },
    get row() {
      return follower.row;
    },
    stop,
  };
}
