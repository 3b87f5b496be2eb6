// useProcessingStatus in a real React renderer (react-test-renderer): the hook follows the session
// through watch() while mounted and removes its channel when unmounted.
import assert from "node:assert/strict";
import { createElement } from "react";
// @ts-types="npm:@types/react-test-renderer@19"
import TestRenderer, { act } from "react-test-renderer";
import { type ProcessingStatus, useProcessingStatus, VibeInsightProvider } from "../react.ts";
import { FakeSupabase, ManualClock, row } from "./fakes.ts";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

Deno.test("useProcessingStatus: the newest row and the mode as state; the channel goes with the component", async () => {
  const sb = new FakeSupabase();
  const clock = new ManualClock();
  const seen: ProcessingStatus[] = [];
  function Probe({ id }: { id: string | null }) {
    seen.push(useProcessingStatus(id, { clock, random: () => 0 }));
    return null;
  }
  let renderer!: TestRenderer.ReactTestRenderer;
  await act(() => {
    renderer = TestRenderer.create(
      createElement(VibeInsightProvider, { supabase: sb }, createElement(Probe, { id: null })),
    );
  });
  assert.deepEqual(seen.at(-1), { row: null, mode: "idle" });
  assert.equal(sb.channels.length, 0, "no session: nothing followed");
  await act(() => {
    renderer.update(createElement(VibeInsightProvider, { supabase: sb }, createElement(Probe, { id: "s-1" })));
  });
  assert.equal(sb.channels.length, 1);
  assert.equal(sb.last.topic, "processing_status:s-1");
  await act(() => {
    sb.last.answer("SUBSCRIBED");
    sb.last.send(row(2, "RUNNING", 40));
    sb.last.send(row(1, "RUNNING", 10)); // late: never shown
  });
  assert.equal(seen.at(-1)!.mode, "realtime");
  assert.equal(seen.at(-1)!.row?.progress, 40);
  assert.ok(!seen.some((s) => s.row?.progress === 10));
  await act(() => renderer.unmount());
  assert.deepEqual(sb.removed, [sb.channels[0]]);
});
