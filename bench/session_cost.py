"""What one 30-minute session really spends, per provider, and how many sessions a month each
Supabase plan's limits allow at that figure (the README's capacity table).

    .venv/bin/python bench/session_cost.py [--minutes 30] [--api-delay 20] [--subscribers 1]

Runs process-audio once on a 30-minute Japanese meeting (tests/data speech, looped, as 64 kb/s AAC:
the design's ~15 MB upload) with the cloud engines: OpenAI and Gemini are the HTTP stand-ins, each
transcription request answered after --api-delay seconds (OpenAI's latency for a 5-minute chunk is
of that order), so the run's length and therefore its status writes are like production's. The
run's own ledger rows give the status writes (count and payload bytes); its result document is then
booked as production books it (vibeinsight.usage.events_from_document): uploads in Tigris, status
rows in Supabase watched by --subscribers clients, the run on a performance-2x Machine in nrt.
Supabase egress per session adds, as assumptions (said in the output), one re-read of the row by
the client and the Edge Function's answer; HTTP headers and TLS are not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_home, embedded_prefect, speech_loop  # noqa: E402
from tests.uploads import as_upload  # noqa: E402

MACHINE = dict(cpu_kind="performance", cpus=2, memory_mb=4096)  # the fly-machines pool's default size
MACHINE_BOOT_S = 10.0  # assumed: create, boot and Prefect start-up before the flow body


def upload(minutes: float, tmp: Path) -> Path:
    wav = speech_loop(Path(tempfile.gettempdir()) / f"vibeinsight-bench-ja-{minutes:g}min.wav", minutes)
    out = tmp / "meeting.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", "-b:a", "64k", str(out)], check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--api-delay", type=float, default=20.0)
    ap.add_argument("--subscribers", type=int, default=1)
    args = ap.parse_args()
    home = bench_home() / f"session-cost-{uuid.uuid4().hex[:8]}"
    with embedded_prefect(home) as server, tempfile.TemporaryDirectory() as tmp:
        source = upload(args.minutes, Path(tmp))
        server.wait_ready()
        from tests.fake_gemini import FakeGemini
        from tests.fake_openai import FakeOpenAI

        with FakeOpenAI() as oa, FakeGemini() as gm:
            oa.delay_s = args.api_delay
            os.environ.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=oa.url + "/v1", GEMINI_API_KEY="g-bench",
                              GOOGLE_GEMINI_BASE_URL=gm.url, VIBEINSIGHT_STORAGE="local",
                              VIBEINSIGHT_API_CONCURRENCY_LIMIT=f"bench-{uuid.uuid4().hex[:6]}")
            os.environ.pop("GOOGLE_API_KEY", None)
            from vibeinsight.settings import get_settings

            get_settings.cache_clear()
            from flows.process_audio import process_audio

            sid = str(uuid.uuid4())
            doc = process_audio(source=as_upload(source), session_id=sid, language="ja")
        report(doc, sid, args)


def report(doc: dict, sid: str, args) -> None:
    from blocks import registry
    from blocks.plans import Plans
    from vibeinsight.quota import current_month, month_bounds
    from vibeinsight.usage import events_from_document, machine_run_event

    start, end, _ = month_bounds(current_month())
    frame = registry.usage_ledger().events(start, end)
    writes_row = frame[(frame["session_id"] == sid) & (frame["kind"] == "status_write")].iloc[0]
    writes, payload = int(writes_row["calls"]), int(writes_row["bytes"])
    run_s = sum(v for k, v in doc["timings"].items() if k != "startup")
    # As production books it: the upload and result in Tigris, status rows in Supabase, a Fly Machine in nrt.
    usage = doc["usage"] | {"storage": "primary", "download_provider": "tigris", "upload_provider": "tigris"}
    events = events_from_document(doc | {"usage": usage}, status_writes=(writes, payload), status_provider="supabase",
                                  subscribers=args.subscribers, fly_region="nrt")
    events.append(machine_run_event(session_id=sid, flow_run_id=None, seconds=run_s + MACHINE_BOOT_S, region="nrt",
                                    **MACHINE))
    reread = math.ceil(payload / writes) * args.subscribers  # the client's one re-read of its row
    edge = len(json.dumps({"session_id": sid, "flow_run_id": str(uuid.uuid4())}))  # the Edge Function's 202 body
    egress = sum(e.bytes for e in events if e.provider == "supabase" and e.kind == "status_write") + reread + edge
    messages = writes * args.subscribers
    by = {}
    for e in events:
        by.setdefault(e.provider, []).append(e)
    print(f"One {args.minutes:g}-minute session (upload {doc['source']['bytes'] / 1e6:.1f} MB, run {run_s:.1f} s, "
          f"{args.subscribers} subscriber(s)):")
    print(f"  status writes {writes} ({payload} B payload): {messages} Realtime messages, at most 1 a second")
    print(f"  Supabase egress {egress:,} B = status messages {payload * args.subscribers:,} + row re-read {reread} "
          f"(assumed: one) + Edge Function answer {edge} (assumed; headers not counted)")
    for p in ("tigris", "fly", "openai", "gemini"):
        rows = by.get(p, [])
        what = ", ".join(f"{e.kind} {e.bytes:,} B" + (f" {e.seconds:.0f} s {e.meta.get('size')}" if e.seconds else "")
                         for e in rows)
        print(f"  {p:8} ${sum(e.cost_usd for e in rows):.5f} booked ({what})")
    tig = Plans().prices()["tigris"]
    held = sum(e.bytes for e in by.get("tigris", []) if e.kind == "storage_held")
    tigris_usd = held / 1e9 * tig["storage_usd_per_gb_month"]["value"] + 1 / 1000 * tig["per_1000_put"] \
        + 1 / 1000 * tig["per_1000_get"]
    total = sum(e.cost_usd for e in events) + tigris_usd
    print(f"  tigris list price past the free tier: ${tigris_usd:.5f} for a month held, one PUT, one GET")
    print(f"  total ${total:.4f} a session, ${total * 60 / args.minutes:.4f} an audio hour")
    print("\nSessions a month each Supabase limit allows at these figures (design: 333 Free / 3,333 Pro at 15 MB each):")
    print("| plan | egress | sessions by egress | Realtime messages | sessions by messages | concurrent watchers "
          "(connections) | sessions at once (messages/s, 1 a second each) |")
    for plan in ("free", "pro", "team"):
        lim = Plans().limits(plan)
        by_egress = lim.egress_limit_bytes // egress
        by_msgs = lim.realtime_messages_month // messages
        print(f"| {plan} | {lim.egress_limit_bytes / 1e9:g} GB | {by_egress:,} | {lim.realtime_messages_month:,} | "
              f"{by_msgs:,} | {lim.realtime_connections:,} | {lim.realtime_messages_per_s // args.subscribers:,} |")


if __name__ == "__main__":
    main()
