"""One long recording fanned out over Fly Machines (issue 21): measured here, modelled for Fly.

Measured: a 20-minute Japanese recording (tests/data/ja_meeting.flac looped, bench/_common.speech_loop)
goes through the production shape (tests/fly_stack.py, mode "fly": a Prefect server on PostgreSQL,
`prefect deploy --all`, the fly-machines worker, the Machines stand-in, SeaweedFS, the status
observer) with the local faster-whisper engine on one-core Machines (the pool's `cpus` 1; the
stand-in pins each Machine's processes to its own core), once as one run (VIBEINSIGHT_FANOUT=off)
and once fanned out (VIBEINSIGHT_FANOUT_PART_S=600, _LEAD_S=300: the parent keeps 750 s, one part run
takes 450 s). Printed: each wall time (trigger to
COMPLETED), the ratio (target <= 0.65), each CER against the reference text, and the components:
Machine start (stand-in create to process start), Prefect start (process start to flow Running),
dispatch (run created to Machine create), model load, part transfer (bucket put and get of a part's
chunks), compute (core-seconds per audio second), the parent's tail (last part done to COMPLETED).

Modelled (model() below, from those figures): a 60-minute recording on Fly performance-2x Machines
with 5-minute parts: time from the run's start to COMPLETED (target <= 60 s), Machine cost against
one Machine doing it all (target <= 1.3x), and the part size that is soonest within that cost.

The Machines are `performance` ones by default (`--cpu-kind shared` for the others): the stand-in runs
their processes ahead of this host's own (the Prefect server, PostgreSQL, SeaweedFS, the worker), as
Fly's dedicated vCPUs never wait for the platform; shared ones compete with them for the two cores.

Usage: .venv/bin/python bench/fan_out.py [--minutes 20] [--part-s 600] [--lead-s 300] [--cpu-kind performance]
       .venv/bin/python bench/fan_out.py --model-only   (the model from the last run's figures)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_home, speech_loop  # noqa: E402
from transcribe_engine import cer_of  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fly_stack import POOL, RUNS_APP, FlyStack, fly_stack  # noqa: E402
from vibeinsight.cores import usable_cores  # noqa: E402

FIGURES = bench_home() / "fan_out.json"  # the last run's measured figures, for --model-only
# Fly's prices: vibeinsight/data/providers.json (https://fly.io/docs/about/pricing/, read 2026-11-29):
# a performance vCPU $0.000012732/s with 2 GiB included; performance-2x with 4 GB in nrt (markup 1.3077)
# is $0.0000333/s, $86.3 per 30 days (iad: $66.00, the page's own table).
FLY_SIZE = dict(cpu_kind="performance", cpus=2, memory_mb=4096, region="nrt")
# Two single-threaded chunks keep ~1.9 of 2 cores busy (docs/performance.md, bench/transcribe_engine.py).
TWO_CORE_SPEEDUP = 1.9
# The production worker polls its pool every 5 s (infra/fly/fly.toml PREFECT_WORKER_QUERY_SECONDS);
# the stack here every 1 s: a run waits half a poll on average.
FLY_QUERY_S, STACK_QUERY_S = 5.0, 1.0
BENCH_PERFORMANCE_NICE = 20
# Fly paces creates at 1/s with a burst (the worker's client: a burst of 2, then one a second).
CREATE_BURST, CREATE_EVERY_S = 2, 1.0


# --- measured here ---

def _ts(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


def _event_s(machine, kind: str) -> float | None:
    """When the Machine's first event of `kind` happened (epoch seconds)."""
    times = [e["timestamp"] / 1000 for e in machine.events if e["type"] == kind]
    return min(times) if times else None


def session(fs: FlyStack, audio: Path, language: str, env: dict[str, str], timeout_s: float = 3600) -> dict:
    """One session through the stack with the runs app's secrets plus `env`: its wall time, document,
    and every Machine of it (the parent's and its parts') with its flow run's times."""
    import psycopg

    from deployments.trigger import trigger

    fs.fly.add_app(RUNS_APP, {**fs.secrets, **env})  # Fly secrets: every Machine created from now on
    user = str(uuid.uuid4())
    with psycopg.connect(fs.status_url, autocommit=True) as conn:
        conn.execute("INSERT INTO auth.users (id) VALUES (%s)", (user,))
    src = fs.upload(f"uploads/{user}/{audio.name}", audio)
    before = set(fs.fly.machines)
    t0 = time.time()
    started = trigger(src, user_id=user, language=language, api_url=fs.api_url)
    state = fs.wait_runs([started.flow_run_id], timeout_s=timeout_s)[started.flow_run_id][0]
    if state != "COMPLETED":
        raise SystemExit(f"session {started.session_id} ended {state}; logs in {fs.logs}")
    doc = json.loads(fs.s3.block().get_bytes(f"results/{started.session_id}.json"))
    # the Machines exit a moment after their runs end: wait for every exit event (billing ends there)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(
            _event_s(fs.fly.machines[m], "exit") is None for m in set(fs.fly.machines) - before):
        time.sleep(0.5)
    machines = [fs.fly.machines[m] for m in set(fs.fly.machines) - before]
    run_ids = [(m.config.get("metadata") or {}).get("prefect_flow_run_id") for m in machines]
    runs = {r["id"]: r for r in fs.api("POST", "/flow_runs/filter",
                                       {"flow_runs": {"id": {"any_": [r for r in run_ids if r]}}, "limit": 200})}
    parent = runs[started.flow_run_id]
    rows = []
    for m, rid in sorted(zip(machines, run_ids, strict=True), key=lambda x: _event_s(x[0], "launch") or 0):
        r = runs.get(rid) or {}
        rows.append({"machine": m.id, "flow_run_id": rid, "parent": rid == started.flow_run_id,
                     "run_created": _ts(r.get("created")), "launch": _event_s(m, "launch"),
                     "start": _event_s(m, "start"), "running": _ts(r.get("start_time")),
                     "end": _ts(r.get("end_time")), "exit": _event_s(m, "exit"), "state": (r.get("state") or {}).get("type")})
    return {"session_id": started.session_id, "flow_run_id": started.flow_run_id, "trigger": t0,
            "wall_s": _ts(parent["end_time"]) - t0, "doc": doc, "machines": rows,
            "machine_s": sum((x["exit"] or x["end"]) - x["start"] for x in rows if x["start"])}


def flac(wav: Path) -> Path:
    """The recording as the FLAC upload a client sends (the stack uploads as audio/flac)."""
    dest = wav.with_suffix(".flac")
    if not dest.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), str(dest)], check=True)
    return dest


def model_load_s(model_path: Path, core: int, repeats: int = 3) -> tuple[float, float]:
    """faster-whisper's import and the base model's load (int8, one thread) in a fresh process pinned to
    one core, as a part's Machine does it: medians of (import s, load s)."""
    code = ("import time, sys; t0 = time.perf_counter(); from faster_whisper import WhisperModel; "
            "t1 = time.perf_counter(); WhisperModel(sys.argv[1], device='cpu', compute_type='int8', cpu_threads=1); "
            "print(t1 - t0, time.perf_counter() - t1)")
    got = [tuple(map(float, subprocess.run(["taskset", "--cpu-list", str(core), sys.executable, "-c", code,
                                            str(model_path)], capture_output=True, text=True, check=True)
                     .stdout.split())) for _ in range(repeats)]
    return statistics.median(g[0] for g in got), statistics.median(g[1] for g in got)


def transfer_mb_s(fs: FlyStack, part_bytes: int, chunks: int) -> tuple[float, float]:
    """MB/s of putting, then getting, one part's chunks (8 at once, as flows/fan_out.py and
    flows/transcribe_part.py move them) through the stack's bucket."""
    client, bucket = fs.s3.block().client(), fs.s3.bucket_name
    size = part_bytes // chunks
    data = os.urandom(size)
    keys = [f"prefect-results/fanout/bench/{uuid.uuid4().hex}-{i}.wav" for i in range(chunks)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=data), keys))
        t1 = time.perf_counter()
        list(pool.map(lambda k: client.get_object(Bucket=bucket, Key=k)["Body"].read(), keys))
        t2 = time.perf_counter()
    for k in keys:
        client.delete_object(Bucket=bucket, Key=k)
    mb = size * chunks / 1e6
    return mb / (t1 - t0), mb / (t2 - t1)


def machine_kind(fs, cpu_kind: str) -> None:
    """The runs pool's Machines of this CPU kind, one vCPU each: on the stand-in a `performance` Machine's
    processes come first on its core, as dedicated vCPUs do, while the Prefect server, the databases and
    S3 (elsewhere on Fly) take what is left; a `shared` one competes with them."""
    pool = fs.api("GET", f"/work_pools/{POOL}")
    props = pool["base_job_template"]["variables"]["properties"]
    props["cpu_kind"]["default"], props["cpus"]["default"] = cpu_kind, 1
    props["memory_mb"]["default"] = 2048 if cpu_kind == "performance" else 1024  # Fly's least for the kind
    fs.api("PATCH", f"/work_pools/{POOL}", {"base_job_template": pool["base_job_template"]})


def measure(minutes: float, part_s: float, lead_s: float, cpu_kind: str = "performance") -> dict:
    from vibeinsight.models import model_dir

    load0 = os.getloadavg()
    models = bench_home() / "models"  # the image's VIBEINSIGHT_MODEL_DIR: assembled once, read by every Machine
    base = model_dir("base", models)
    audio = flac(speech_loop(Path(tempfile.gettempdir()) / f"vibeinsight-bench-ja-{minutes:g}min.wav", minutes))
    warm = flac(speech_loop(Path(tempfile.gettempdir()) / "vibeinsight-bench-ja-0.5min.wav", 0.5))
    local = {"VIBEINSIGHT_TRANSCRIBER": "local", "VIBEINSIGHT_MODEL_DIR": str(models)}
    out: dict = {"minutes": minutes, "part_s": part_s, "lead_s": lead_s, "host_cores": usable_cores(),
                 "cpu_kind": cpu_kind}
    # alone on the host: a performance Machine's processes at nice -20, as Fly's dedicated vCPUs (tests.fly_standin)
    with tempfile.TemporaryDirectory(prefix="fan-out-bench-") as tmp, \
            fly_stack(Path(tmp), mode="fly", performance_nice=BENCH_PERFORMANCE_NICE) as fs:
        machine_kind(fs, cpu_kind)
        print(f"stack ready; load average {load0[0]:.2f}", flush=True)
        session(fs, warm, "ja", {**local, "VIBEINSIGHT_FANOUT": "off"})  # warms the server, caches, bytecode
        print(f"warm-up done; load average {os.getloadavg()[0]:.2f}", flush=True)
        out["load_before"] = os.getloadavg()[0]
        out["single"] = session(fs, audio, "ja", {**local, "VIBEINSIGHT_FANOUT": "off"})
        print(f"one run: {out['single']['wall_s']:.1f} s", flush=True)
        out["fanout"] = session(fs, audio, "ja", {**local, "VIBEINSIGHT_FANOUT": "auto",
                                                  "VIBEINSIGHT_FANOUT_MIN_S": str(min(600.0, part_s)),
                                                  "VIBEINSIGHT_FANOUT_PART_S": str(part_s),
                                                  "VIBEINSIGHT_FANOUT_LEAD_S": str(lead_s)})
        print(f"fanned out: {out['fanout']['wall_s']:.1f} s", flush=True)
        out["load_after"] = os.getloadavg()[0]
        doc = out["single"]["doc"]
        duration = doc["source"]["duration_s"]
        compact_bps = doc["transcode"]["bytes"] / duration
        n_chunks = max(1, round(len(doc["transcode"]["chunks"]) * part_s / duration))
        out["put_mb_s"], out["get_mb_s"] = transfer_mb_s(fs, int(compact_bps * part_s), n_chunks)
    out["import_s"], out["load_s"] = model_load_s(base, core=max(os.sched_getaffinity(0)))
    out["compact_bytes_per_s"] = compact_bps
    return out


# --- figures, and the model for Fly ---

@dataclass
class Figures:
    """What one part and one parent cost, per the measurements (seconds unless named)."""

    machine_start_s: float  # create to process start
    prefect_start_s: float  # process start to the flow Running
    dispatch_s: float  # run created to its Machine's create (the worker's poll and the create call)
    exit_s: float  # flow ended to the Machine's process exit (billed too)
    model_load_s: float  # faster-whisper import + base model load, one core
    part_overhead_s: float  # a part's Running to its end beyond its compute: model load, chunks in, result out
    run_overhead_s: float  # a parent's Running to its end beyond its stages (Prefect's own work, status writes)
    compute_per_audio_s: float  # core-seconds of transcription + speaker embeddings per audio second
    ingest_per_audio_s: float  # the parent's download of the upload (here a 16 kHz FLAC)
    transcode_per_audio_s: float
    finalize_s: float  # the parent after the transcripts: merge, clustering, analysis, result, row
    tail_s: float  # last part's end to the parent noticing it (its poll, the state's way back)
    compact_bytes_per_s: float
    put_mb_s: float
    get_mb_s: float


def own_end(parent: dict, doc: dict) -> float:
    """When the parent's own share ended (epoch s): its Running, ingest and transcode, then the share's wall time."""
    own = next(p for p in doc["parts"] if p["flow_run_id"] == parent["flow_run_id"])
    t = doc["timings"]
    return parent["running"] + t.get("ingest", 0.0) + t.get("transcode", 0.0) + (own["wall_s"] or 0.0)


def figures(m: dict) -> Figures:
    """The components from the two measured sessions: Machine-side figures from every Machine of both;
    compute from the one run (one core, model load taken out); the tail from the fanned-out one."""
    rows = m["single"]["machines"] + m["fanout"]["machines"]
    doc = m["single"]["doc"]
    t = doc["timings"]
    duration = doc["source"]["duration_s"]
    load = m["import_s"] + m["load_s"]
    fan = m["fanout"]
    parts = [r for r in fan["machines"] if not r["parent"]]
    parent = next(r for r in fan["machines"] if r["parent"])
    fan_t = fan["doc"]["timings"]
    return Figures(
        machine_start_s=statistics.median(r["start"] - r["launch"] for r in rows),
        prefect_start_s=statistics.median(r["running"] - r["start"] for r in rows),
        dispatch_s=statistics.median(r["launch"] - r["run_created"] for r in rows),
        exit_s=statistics.median(r["exit"] - r["end"] for r in rows if r["exit"]),
        model_load_s=load,
        part_overhead_s=statistics.median(
            (r["end"] - r["running"]) - (t["transcribe"] - load) / duration * p["audio_s"]
            for r in parts for p in fan["doc"]["parts"] if p["flow_run_id"] == r["flow_run_id"]),
        run_overhead_s=(m["single"]["machines"][0]["end"] - m["single"]["machines"][0]["running"])
        - sum(v for k, v in t.items() if k != "diarize"),  # diarize is timed inside transcribe
        compute_per_audio_s=(t["transcribe"] - load) / duration,
        ingest_per_audio_s=t.get("ingest", 0.0) / duration,
        transcode_per_audio_s=t.get("transcode", 0.0) / duration,
        finalize_s=sum(fan_t.get(k, 0.0) for k in ("analyze", "publish")) + fan_t.get("diarize", 0.0),
        # the last part's end (a part run's, or the parent's own share's) to the parent's finalize
        tail_s=max(0.0, parent["end"] - max([p["end"] for p in parts] + [own_end(parent, fan["doc"])])
                   - sum(fan_t.get(k, 0.0) for k in ("analyze", "publish")) - fan_t.get("diarize", 0.0)),
        compact_bytes_per_s=m["compact_bytes_per_s"], put_mb_s=m["put_mb_s"], get_mb_s=m["get_mb_s"])


def model(f: Figures, audio_s: float, part_s: float | None, cpus: int = 2, fly_start_s: float = 10.0,
          lead_s: float = 300.0, query_s: float = FLY_QUERY_S) -> dict:
    """A recording of `audio_s` on Fly Machines of `cpus` dedicated vCPUs, in parts of `part_s` (None:
    one Machine does it all). Returns the time from the run's start (Running) to COMPLETED and the
    Machine seconds billed (every Machine from its create to its process exit).

    As flows/fan_out.py does it: the parent ingests and transcodes alone, puts the other parts' chunks
    in the bucket and starts their runs, then transcribes the first part itself (its chunks on its
    disk; `lead_s` more audio than the others' share, vibeinsight.fanout.plan_parts); the worker picks
    the part runs up within half a poll and creates their Machines at Fly's pace (a burst, then one a
    second); each part boots, starts Prefect, loads the model, gets its chunks and transcribes them on
    its cores; the parent notices the last one, clusters, analyses, publishes."""
    speed = TWO_CORE_SPEEDUP if cpus >= 2 else 1.0
    dispatch = f.dispatch_s + (query_s - STACK_QUERY_S) / 2
    boot = fly_start_s + f.prefect_start_s  # billed from the create on
    head = (f.ingest_per_audio_s + f.transcode_per_audio_s) * audio_s
    if part_s is None or part_s >= audio_s:
        work = f.run_overhead_s + head + f.model_load_s + f.compute_per_audio_s * audio_s / speed + f.finalize_s
        return {"parts": 0, "time_s": work, "machine_s": boot + work + f.exit_s}
    n = max(1, round(audio_s / part_s))
    lead = min(lead_s, audio_s / 2) if n > 1 else 0.0
    each = (audio_s - lead) / n  # a part run's share; the parent's is each + lead
    mb = f.compact_bytes_per_s * each / 1e6
    split = f.run_overhead_s + head + mb * (n - 1) / f.put_mb_s
    # a part's own overhead as measured (model load, chunks in, Prefect's task runs, result out): its
    # components alone (model load and transfer) leave ~5 s of it unexplained
    part_work = max(f.part_overhead_s, f.model_load_s + mb / f.get_mb_s) + f.compute_per_audio_s * each / speed
    ends = [split + dispatch + max(0, i - CREATE_BURST + 1) * CREATE_EVERY_S + boot + part_work for i in range(n - 1)]
    ends.append(split + f.model_load_s + f.compute_per_audio_s * (each + lead) / speed)  # the parent's own
    time_s = max(ends) + f.tail_s + f.finalize_s
    machine_s = (boot + time_s + f.exit_s) + (n - 1) * (boot + part_work + f.exit_s)
    return {"parts": n, "time_s": time_s, "machine_s": machine_s}


def part_sizes(f: Figures, audio_s: float, fly_start_s: float) -> list[dict]:
    """The model at every part size from 30 s to half the recording, 10 s apart (each row with its part_s)."""
    return [model(f, audio_s, s, fly_start_s=fly_start_s) | {"part_s": s} for s in range(30, int(audio_s) // 2 + 1, 10)]


def soonest_within_cost(scan: list[dict], one: dict, ratio: float = 1.3) -> dict | None:
    """The soonest of `scan` whose Machine time is within `ratio` of one run's (the cost target), or None."""
    within = [r for r in scan if r["machine_s"] <= ratio * one["machine_s"]]
    return min(within, key=lambda r: r["time_s"]) if within else None


def print_model(f: Figures, audio_s: float = 3600, part_s: float = 300, fly_start_s: float = 10.0) -> None:
    from vibeinsight.usage import machine_usd_per_second

    usd_s = machine_usd_per_second(FLY_SIZE["cpu_kind"], FLY_SIZE["cpus"], FLY_SIZE["memory_mb"], FLY_SIZE["region"])
    one = model(f, audio_s, None, fly_start_s=fly_start_s)
    print(f"\nModel: a {audio_s / 60:.0f}-minute recording on Fly performance-2x Machines (2 dedicated vCPU, "
          f"4 GB, nrt: ${usd_s:.7f}/s, https://fly.io/docs/about/pricing/), Machine start {fly_start_s:g} s "
          f"(assumed; the stand-in's boot is not Fly's), the rest as measured here")
    print(f"{'part size':>10} {'parts':>5} {'run start to COMPLETED':>23} {'Machine s':>10} {'cost':>9} {'x one':>6}")

    def row(label: str, r: dict) -> None:
        print(f"{label:>10} {r['parts']:>5} {r['time_s']:>21.1f} s {r['machine_s']:>10.0f} "
              f"${r['machine_s'] * usd_s:>8.4f} {r['machine_s'] / one['machine_s']:>6.2f}")

    row("one run", one)
    for s in (60, 90, 120, 180, 240, 300, 450, 600, 900, 1200):
        row(f"{s} s", model(f, audio_s, s, fly_start_s=fly_start_s))
    at = model(f, audio_s, part_s, fly_start_s=fly_start_s)
    print(f"{part_s:g}-s parts: {at['time_s']:.1f} s from the run's start to COMPLETED (target <= 60 s), "
          f"{at['machine_s'] / one['machine_s']:.2f}x the Machine cost of one run (target <= 1.3x); one run: "
          f"{one['time_s']:.1f} s")
    scan = part_sizes(f, audio_s, fly_start_s)
    soonest = min(scan, key=lambda r: r["time_s"])
    print(f"soonest: parts of {soonest['part_s']} s ({soonest['parts']} parts): {soonest['time_s']:.1f} s at "
          f"{soonest['machine_s'] / one['machine_s']:.2f}x the cost")
    if (b := soonest_within_cost(scan, one)) is not None:
        print(f"soonest within 1.3x the cost: parts of {b['part_s']} s ({b['parts']} parts): {b['time_s']:.1f} s, "
              f"{b['machine_s'] / one['machine_s']:.2f}x")
    else:
        cheapest = min(scan, key=lambda r: r["machine_s"])
        print(f"no part size is within 1.3x the cost; the cheapest, parts of {cheapest['part_s']} s "
              f"({cheapest['parts']} parts): {cheapest['time_s']:.1f} s, {cheapest['machine_s'] / one['machine_s']:.2f}x")
    no_lead = model(f, audio_s, part_s, fly_start_s=fly_start_s, lead_s=0.0)
    best_lead = min((model(f, audio_s, part_s, fly_start_s=fly_start_s, lead_s=x) | {"lead_s": x}
                     for x in range(0, int(audio_s) // 2 + 1, 30)), key=lambda r: r["time_s"])
    print(f"the parent's lead (VIBEINSIGHT_FANOUT_LEAD_S, 300 s): none gives {no_lead['time_s']:.1f} s "
          f"({no_lead['machine_s'] / one['machine_s']:.2f}x); the soonest, {best_lead['lead_s']} s, "
          f"{best_lead['time_s']:.1f} s ({best_lead['machine_s'] / one['machine_s']:.2f}x)")
    print_start_sensitivity(f, audio_s, part_s)


def print_start_sensitivity(f: Figures, audio_s: float, part_s: float) -> None:
    """The Machine start is the one figure assumed, not measured: Fly's create (placement, image, boot)
    against starting a Machine created ahead and stopped (Fly: "started and stopped at subsecond
    speeds", https://fly.io/docs/machines/). Both targets at once need a part size that is soon
    enough and cheap enough; this finds, for each start, the soonest part size within 1.3x."""
    print("Machine start (assumed) against both targets (<= 60 s and <= 1.3x the cost of one run at the same start):")
    print(f"{'start':>6} {part_s:>6g}-s parts {'x one':>6} {'soonest within 1.3x':>22} {'both met':>9}")
    for start in (1.0, 2.0, 5.0, 10.0, 20.0):
        one = model(f, audio_s, None, fly_start_s=start)
        at = model(f, audio_s, part_s, fly_start_s=start)
        best = soonest_within_cost(part_sizes(f, audio_s, start), one)
        soonest = (f"{best['part_s']} s x{best['parts']}: {best['time_s']:.1f} s" if best else "none")
        both = best is not None and best["time_s"] <= 60.0
        print(f"{start:>5g}s {at['time_s']:>14.1f} s {at['machine_s'] / one['machine_s']:>6.2f} {soonest:>22} "
              f"{'yes' if both else 'no':>9}")


def report(m: dict) -> None:
    s, fo = m["single"], m["fanout"]
    duration = s["doc"]["source"]["duration_s"]
    cer_s = cer_of(s["doc"]["transcript"]["text"], duration)
    cer_f = cer_of(fo["doc"]["transcript"]["text"], duration)
    f = figures(m)
    parts = fo["doc"].get("parts") or []
    print(f"\n{duration:.0f} s Japanese recording, local faster-whisper base int8, one-core "
          f"{m.get('cpu_kind', 'shared')} Machines (stand-in affinity) on this {m['host_cores']}-core machine; "
          f"load average {m['load_before']:.2f} before, {m['load_after']:.2f} after")
    print(f"one run (FANOUT=off):        {s['wall_s']:7.1f} s trigger to COMPLETED, CER {cer_s:.3f}, "
          f"{len(s['machines'])} Machine, {s['machine_s']:.0f} Machine-s")
    print(f"fanned out ({len(parts)} parts of ~{m['part_s']:g} s): {fo['wall_s']:7.1f} s trigger to COMPLETED, "
          f"CER {cer_f:.3f}, {len(fo['machines'])} Machines, {fo['machine_s']:.0f} Machine-s "
          f"({fo['machine_s'] / s['machine_s']:.2f}x)")
    print(f"ratio fanned out / one run:  {fo['wall_s'] / s['wall_s']:.3f} (target <= 0.65 at no worse CER: "
          f"{cer_f:.3f} vs {cer_s:.3f})")
    for p in parts:
        print(f"  part {p['flow_run_id'][:8]}: chunks {p['chunks']}, {p['audio_s']:.0f} audio s, "
              f"{p['wall_s']} s running, {p.get('attempts')} attempt(s)")
    for r in fo["machines"]:
        rel = {k: r[k] - fo["trigger"] for k in ("launch", "start", "running", "end", "exit") if r[k]}
        print(f"  {'parent' if r['parent'] else 'part  '} Machine {r['machine']}: " +
              ", ".join(f"{k} +{v:.1f}" for k, v in rel.items()) + " s after the trigger")
    print("components (medians over every Machine of both sessions):")
    print(f"  Machine start (stand-in create to process start): {f.machine_start_s:.2f} s")
    print(f"  Prefect start (process start to flow Running):    {f.prefect_start_s:.2f} s")
    print(f"  dispatch (run created to Machine create):         {f.dispatch_s:.2f} s (the worker polls every 1 s)")
    print(f"  flow end to Machine exit:                         {f.exit_s:.2f} s")
    mb = f.compact_bytes_per_s * m["part_s"] / 1e6
    print(f"  a part's Running to end beyond compute at the one run's rate: {f.part_overhead_s:.2f} s (model load "
          f"and transfer: {f.model_load_s + mb / f.get_mb_s:.2f} s); the parent's beyond its stages: {f.run_overhead_s:.2f} s")
    print(f"  model load (import {m['import_s']:.2f} s + load {m['load_s']:.2f} s, one core): {f.model_load_s:.2f} s")
    print(f"  part transfer ({mb:.1f} MB of 16 kHz PCM chunks): put {f.put_mb_s:.0f} MB/s ({mb / f.put_mb_s:.2f} s), "
          f"get {f.get_mb_s:.0f} MB/s ({mb / f.get_mb_s:.2f} s)")
    print(f"  compute: {f.compute_per_audio_s:.3f} core-s per audio s (transcription and speaker embeddings, "
          f"one core, model load out); stages of the one run: {s['doc']['timings']}")
    print(f"  ingest {f.ingest_per_audio_s * 60:.2f} s and transcode {f.transcode_per_audio_s * 60:.2f} s per audio "
          f"minute; parent after the parts: tail {f.tail_s:.2f} s + finalize {f.finalize_s:.2f} s")
    # the model against what it models here: one-core Machines, the stand-in's start, the stack's 1-s poll
    here = {k: model(f, duration, p, cpus=1, fly_start_s=f.machine_start_s, query_s=STACK_QUERY_S,
                     lead_s=m.get("lead_s", 0.0))
            for k, p in (("one", None), ("fan", m["part_s"]))}
    before = f.dispatch_s + f.machine_start_s + f.prefect_start_s  # trigger to the parent's Running
    print(f"  check, the model on this machine's figures: one run {before + here['one']['time_s']:.1f} s "
          f"(measured {s['wall_s']:.1f}), fanned out {before + here['fan']['time_s']:.1f} s (measured {fo['wall_s']:.1f})")
    print_model(f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--part-s", type=float, default=600.0)
    ap.add_argument("--lead-s", type=float, default=300.0, help="VIBEINSIGHT_FANOUT_LEAD_S of the fanned-out run")
    ap.add_argument("--cpu-kind", choices=("performance", "shared"), default="performance",
                    help="the one-vCPU Machines' kind (the model's are performance: dedicated vCPUs)")
    ap.add_argument("--model-only", action="store_true", help="the model from the last run's figures")
    args = ap.parse_args()
    if args.model_only:
        m = json.loads(FIGURES.read_text())
    else:
        m = measure(args.minutes, args.part_s, args.lead_s, args.cpu_kind)
        FIGURES.write_text(json.dumps(m, default=str))
    report(m)


if __name__ == "__main__":
    main()
