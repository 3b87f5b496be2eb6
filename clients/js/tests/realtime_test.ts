import assert from "node:assert/strict";
import { classify, decide, DEFAULT_BACKOFF } from "../src/realtime.ts";

Deno.test("Realtime's limit reasons and codes are recognised", () => {
  assert.equal(classify(new Error("too_many_connections")), "too_many_connections");
  assert.equal(classify(new Error("error", { cause: { reason: "Too many connections" } })), "too_many_connections");
  assert.equal(classify({ reason: "ConnectionRateLimitReached" }), "too_many_connections");
  assert.equal(classify(new Error("too_many_channels")), "too_many_channels");
  assert.equal(classify(new Error("ChannelRateLimitReached: Too many channels")), "too_many_channels");
  assert.equal(classify(new Error("too_many_joins")), "too_many_joins");
  assert.equal(classify("ClientJoinRateLimitReached"), "too_many_joins");
  assert.equal(classify(new Error("tenant_events")), "tenant_events");
  assert.equal(classify(new Error("socket closed: 1006")), "other");
  assert.equal(classify(undefined), "other");
  assert.equal(classify("TIMED_OUT"), "other");
});

const policy = { baseMs: 1000, maxMs: 30_000, maxThrottleMs: 10_000 };

Deno.test("back-off doubles a try up to the cap, with half of it random (equal jitter)", () => {
  const low = (a: number) => decide("other", a, 0, () => 0, policy).delayMs;
  const high = (a: number) => decide("other", a, 0, () => 1, policy).delayMs;
  assert.deepEqual([0, 1, 2, 3].map(low), [500, 1000, 2000, 4000]);
  assert.deepEqual([0, 1, 2, 3].map(high), [1000, 2000, 4000, 8000]);
  assert.equal(high(10), 30_000, "capped");
  assert.equal(low(10), 15_000, "never less than half the cap: no thundering herd at once");
  assert.equal(decide("other", 2, 0, () => 0.5, policy).delayMs, 3000);
});

Deno.test("too_many_connections reconnects (a new socket), starting higher", () => {
  const d = decide("too_many_connections", 0, 0, () => 0, policy);
  assert.equal(d.action, "reconnect");
  assert.equal(d.delayMs, 2000);
  assert.ok(d.delayMs > decide("other", 0, 0, () => 0, policy).delayMs);
});

Deno.test("too_many_channels and too_many_joins reuse the channel and back off", () => {
  for (const t of ["too_many_channels", "too_many_joins"] as const) {
    const d = decide(t, 1, 0, () => 0, policy);
    assert.equal(d.action, "reuse", t);
    assert.equal(d.delayMs, 2000, t);
    assert.equal(d.throttleMs, 0, t);
  }
});

Deno.test("tenant_events slows the client down: the throttle doubles up to its cap", () => {
  let throttle = 0;
  const seen = [];
  for (let a = 0; a < 6; a++) {
    const d = decide("tenant_events", a, throttle, () => 0, policy);
    assert.equal(d.action, "reuse");
    throttle = d.throttleMs;
    seen.push(throttle);
  }
  assert.deepEqual(seen, [1000, 2000, 4000, 8000, 10_000, 10_000]);
  assert.equal(decide("other", 0, 4000, () => 0, policy).throttleMs, 4000, "other troubles keep it");
  assert.deepEqual(DEFAULT_BACKOFF, { baseMs: 1000, maxMs: 30_000, maxThrottleMs: 10_000 });
});
