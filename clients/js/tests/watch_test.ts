import assert from "node:assert/strict";
import type { StatusRow } from "../src/types.ts";
import { type Mode, watch } from "../src/watch.ts";
import { FakeSupabase, ManualClock, row, settle } from "./fakes.ts";

function setup(opts: Record<string, unknown> = {}) {
  const sb = new FakeSupabase();
  const clock = new ManualClock();
  const got: StatusRow[] = [];
  const modes: Mode[] = [];
  const w = watch(sb, "s-1", (r) => got.push(r), {
    clock,
    random: () => 0,
    pollMs: 1000,
    onMode: (m) => modes.push(m),
    ...opts,
  });
  return { sb, clock, got, modes, w, seqs: () => got.map((r) => r.seq) };
}

Deno.test("one channel for the session, filtered on session_id; the row is read again once subscribed", async () => {
  const { sb, w, got } = setup();
  await settle();
  assert.equal(sb.channels.length, 1);
  assert.equal(sb.last.topic, "processing_status:s-1");
  assert.deepEqual(sb.last.filter, {
    event: "*",
    schema: "public",
    table: "processing_status",
    filter: "session_id=eq.s-1",
  });
  assert.ok(sb.queries[0].includes("session_id=eq.s-1") && sb.queries[0].includes("seq"));
  const before = sb.reads;
  sb.row = row(3, "RUNNING", 30);
  sb.last.answer("SUBSCRIBED");
  await settle();
  assert.equal(w.mode, "realtime");
  assert.equal(sb.reads, before + 1, "read once after the join: nothing missed in between");
  assert.deepEqual(got.map((r) => r.progress), [30]);
  await w.stop();
});

Deno.test("updates arrive in order, never going back, whichever path brings them", async () => {
  const { sb, clock, seqs, w } = setup();
  sb.last.answer("SUBSCRIBED");
  await settle();
  sb.last.send(row(2, "RUNNING", 20));
  sb.last.send(row(4, "RUNNING", 40));
  sb.last.send(row(3, "RUNNING", 30)); // late
  sb.row = row(2, "RUNNING", 20); // a poll that read an older state
  await clock.advance(5000);
  sb.last.send(row(4, "RUNNING", 40)); // twice
  sb.last.send(row(5, "COMPLETED", 100, "done"));
  assert.deepEqual(seqs(), [2, 4, 5]);
  assert.equal((await w.done).status, "COMPLETED");
  assert.equal(w.mode, "stopped");
  assert.equal(sb.removed.length, 1, "the channel is removed at the end");
});

Deno.test("while Realtime is down the row is polled every pollMs; when it returns, polling slows again", async () => {
  const { sb, clock, got, modes, w } = setup({ onTrouble: undefined });
  sb.last.answer("SUBSCRIBED");
  await settle();
  let reads = sb.reads;
  await clock.advance(4999);
  assert.equal(sb.reads, reads, "Realtime up: only the safety read every 5 × pollMs");
  await clock.advance(1);
  assert.equal(sb.reads, reads + 1);
  sb.last.answer("CHANNEL_ERROR", new Error("socket closed: 1006"));
  await settle();
  assert.equal(w.mode, "polling");
  reads = sb.reads;
  sb.row = row(7, "RUNNING", 70);
  await clock.advance(1000);
  assert.equal(sb.reads, reads + 1);
  assert.equal(got[got.length - 1].seq, 7, "progress keeps moving by polling");
  // the first re-join comes after the back-off (base 1000, equal jitter, random 0 → 500 ms): it fails too
  assert.equal(sb.channels.length, 2);
  sb.last.answer("CHANNEL_ERROR", new Error("socket closed: 1006"));
  await settle();
  await clock.advance(1000); // 2nd back-off: 1000 ms
  assert.equal(sb.channels.length, 3);
  sb.last.answer("SUBSCRIBED");
  await settle();
  assert.equal(w.mode, "realtime");
  reads = sb.reads;
  await clock.advance(4000);
  assert.equal(sb.reads, reads, "back on Realtime: no fast polling");
  assert.deepEqual(modes, ["realtime", "polling", "realtime"]);
  await w.stop();
});

Deno.test("too_many_connections: the channel is dropped (the socket with it) and a new one joins after a jittered back-off", async () => {
  const troubles: [string, number, string][] = [];
  const { sb, clock, w } = setup({
    random: () => 0.5,
    onTrouble: (t: string, d: number, a: string) => troubles.push([t, d, a]),
  });
  const first = sb.last;
  first.answer("CHANNEL_ERROR", new Error("too_many_connections"));
  await settle();
  assert.deepEqual(sb.removed, [first]);
  assert.deepEqual(troubles, [["too_many_connections", 3000, "reconnect"]]); // ceiling 4000: 2000 + 0.5 × 2000
  await clock.advance(2999);
  assert.equal(sb.channels.length, 1, "not before the back-off");
  await clock.advance(1);
  assert.equal(sb.channels.length, 2);
  assert.equal(sb.last.topic, first.topic);
  assert.notEqual(sb.last.socket, first.socket, "a new socket");
  sb.last.answer("CHANNEL_ERROR", new Error("too_many_connections"));
  await settle();
  assert.equal(troubles[1][1], 6000, "doubled");
  await w.stop();
});

Deno.test("too_many_connections with another channel of the app on the socket: the socket stays for it", async () => {
  const { sb, w } = setup();
  const first = sb.last;
  const other = sb.channel("chat:room-1");
  other.subscribe(() => {});
  first.answer("CHANNEL_ERROR", new Error("too_many_connections"));
  await settle();
  assert.deepEqual(sb.removed, [first]);
  assert.ok(sb.open, "not disconnected under the app's other channel");
  assert.deepEqual(sb.getChannels(), [other]);
  await w.stop();
});

Deno.test("too_many_channels / too_many_joins: the channel is left and its topic joined again on the same socket after the back-off", async () => {
  for (const reason of ["too_many_channels", "too_many_joins"]) {
    const { sb, clock, w } = setup();
    const ch = sb.last;
    ch.answer("CHANNEL_ERROR", new Error(reason));
    await settle();
    assert.equal(ch.unsubscribes, 1);
    assert.deepEqual(sb.removed, [], `${reason}: the socket is kept`);
    await clock.advance(999);
    assert.equal(sb.channels.length, 1, "not before the back-off");
    await clock.advance(1); // 2 × base, equal jitter with random 0
    assert.equal(sb.channels.length, 2, reason); // realtime-js joins an instance once: a new one of the topic
    assert.equal(sb.last.topic, ch.topic);
    assert.equal(sb.last.socket, ch.socket, `${reason}: the same socket`);
    assert.equal(sb.live.length, 1, "one channel for the session at a time");
    sb.last.answer("SUBSCRIBED");
    await settle();
    assert.equal(w.mode, "realtime");
    await w.stop();
  }
});

Deno.test("a join the client refuses (a channel that could not be left) is a trouble, and the next join starts afresh", async () => {
  const troubles: string[] = [];
  const { sb, clock, w } = setup({ onTrouble: (t: string, _d: number, a: string) => troubles.push(`${t}:${a}`) });
  const ch = sb.last;
  ch.unsubscribe = () => Promise.reject(new Error("leave timed out")); // still the client's channel
  ch.answer("CHANNEL_ERROR", new Error("too_many_joins"));
  await settle();
  await clock.advance(1000); // the join takes the same instance, whose subscribe throws
  assert.deepEqual(troubles, ["too_many_joins:reuse", "other:reconnect"]);
  assert.deepEqual(sb.removed, [ch]);
  await clock.advance(1000);
  assert.equal(sb.channels.length, 2);
  sb.last.answer("SUBSCRIBED");
  await settle();
  assert.equal(w.mode, "realtime");
  await w.stop();
});

Deno.test("tenant_events: updates to the app are throttled, the newest kept, the end at once", async () => {
  const { sb, clock, seqs, w } = setup();
  sb.last.answer("CHANNEL_ERROR", new Error("tenant_events"));
  await settle();
  await clock.advance(1000);
  assert.equal(sb.channels.length, 2); // joined again (a new instance of the topic)
  const ch = sb.last;
  ch.answer("SUBSCRIBED");
  await settle();
  ch.send(row(1, "RUNNING", 10));
  ch.send(row(2, "RUNNING", 20));
  ch.send(row(3, "RUNNING", 30));
  assert.deepEqual(seqs(), [1]);
  await clock.advance(1000);
  assert.deepEqual(seqs(), [1, 3]);
  ch.send(row(4, "RUNNING", 40));
  ch.send(row(5, "FAILED", 40));
  assert.deepEqual(seqs(), [1, 3, 5]);
  assert.equal(w.mode, "stopped");
});

Deno.test("a join that times out falls back to polling like an error", async () => {
  const { sb, w } = setup();
  sb.last.answer("TIMED_OUT");
  await settle();
  assert.equal(w.mode, "polling");
  await w.stop();
  assert.equal(w.mode, "stopped");
});
