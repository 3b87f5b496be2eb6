import assert from "node:assert/strict";
import { StatusFollower, Throttle } from "../src/follow.ts";
import type { StatusRow } from "../src/types.ts";
import { ManualClock, row } from "./fakes.ts";

Deno.test("an older row (by seq) or a repeat is dropped; a newer one is news", () => {
  const f = new StatusFollower();
  assert.equal(f.offer(row(2, "RUNNING", 20)), true);
  assert.equal(f.offer(row(1, "RUNNING", 10)), false, "older seq");
  assert.equal(f.offer(row(2, "RUNNING", 20)), false, "repeat");
  assert.equal(f.offer(row(3, "RUNNING", 40)), true);
  assert.equal(f.offer(null), false);
  assert.equal(f.row?.progress, 40);
  assert.equal(f.done, false);
  assert.equal(f.offer(row(4, "COMPLETED", 100, "done")), true);
  assert.equal(f.done, true);
});

Deno.test("the same seq with another status or progress is news (a writer that does not bump seq)", () => {
  const f = new StatusFollower();
  f.offer(row(5, "RUNNING", 50));
  assert.equal(f.offer(row(5, "RUNNING", 60)), true);
  assert.equal(f.offer(row(5, "FAILED", 60)), true);
});

Deno.test("the throttle passes one row a window, delivers the newest at its end, a terminal row at once", async () => {
  const clock = new ManualClock();
  const got: StatusRow[] = [];
  const t = new Throttle(clock, (r) => got.push(r));
  t.intervalMs = 1000;
  t.push(row(1, "RUNNING", 10));
  t.push(row(2, "RUNNING", 20));
  t.push(row(3, "RUNNING", 30));
  assert.deepEqual(got.map((r) => r.seq), [1]);
  await clock.advance(999);
  assert.deepEqual(got.map((r) => r.seq), [1]);
  await clock.advance(1);
  assert.deepEqual(got.map((r) => r.seq), [1, 3], "the newest, not the one in between");
  t.push(row(4, "RUNNING", 40));
  t.push(row(5, "COMPLETED", 100));
  assert.deepEqual(got.map((r) => r.seq), [1, 3, 5], "terminal at once; the waiting row is dropped");
  await clock.advance(5000);
  assert.deepEqual(got.map((r) => r.seq), [1, 3, 5]);
});
