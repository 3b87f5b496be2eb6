"""Fan-out end to end on the fly-machines pool (issue 21): a real Prefect server with the deployments of
prefect.yaml, the Fly worker and its Machines stand-in, SeaweedFS, PostgreSQL for the status rows, the
status observer, the OpenAI stand-in (tests/fly_stack.py). A two-voice mono mix of ~35 s is fanned out
with low thresholds (the run's job variables: VIBEINSIGHT_FANOUT_MIN_S / _PART_S), so it splits into
parts of a few 12 s chunks; the same mix with VIBEINSIGHT_FANOUT=off is the single-run reference."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone

import psycopg
import pytest

from tests.fake_openai import error
from tests.fly_stack import RUNS_APP, FlyStack, fly_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# three parts of two 6 s chunks: the parent's own and two part runs (no lead: equal shares)
FANNED = {"VIBEINSIGHT_FANOUT_MIN_S": "10", "VIBEINSIGHT_FANOUT_PART_S": "12", "VIBEINSIGHT_FANOUT_LEAD_S": "0"}
# two parts of three chunks: a part run with a finished chunk and one still to send can be caught
HALVES = {**FANNED, "VIBEINSIGHT_FANOUT_PART_S": "17"}


@pytest.fixture(scope="module")
def fly(tmp_path_factory):
    # Prefect's server cancels a cancelled run's subflow runs in its clean-up loop (20 s by default)
    saved = os.environ.get("PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS")
    os.environ["PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS"] = "2"
    try:
        with fly_stack(tmp_path_factory.mktemp("fanout-e2e"), mode="fly") as fs:
            # 6 s chunks: the ~35 s mix becomes six
            fs.secrets["VIBEINSIGHT_OPENAI_CHUNK_S"] = "6"
            fs.fly.add_app(RUNS_APP, fs.secrets)
            yield fs
    finally:
        if saved is None:
            os.environ.pop("PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS", None)
        else:
            os.environ["PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS"] = saved


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    from tests.speaker_mixes import build, turns_plan

    return build(tmp_path_factory.mktemp("fanout-mix"), "two-voices", turns_plan(["jfk", "ja"], 10, seed=21))


def start(fly: FlyStack, audio, env: dict[str, str], tag: str) -> tuple[str, str]:
    """A session as the Edge Function starts it, with these non-secret settings on its Machine: (sid, run).
    Its vocabulary term `tag` reaches the OpenAI stand-in as the prompt: each request names its session."""
    from deployments.trigger import _write_pending

    user, sid = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(fly.status_url, autocommit=True) as conn:
        conn.execute("INSERT INTO auth.users (id) VALUES (%s)", (user,))
    source = fly.upload(f"uploads/{user}/call.wav", audio)
    _write_pending(sid, user, "process-audio/api")
    dep = fly.api("GET", "/deployments/name/process-audio/api")
    run = fly.api("POST", f"/deployments/{dep['id']}/create_flow_run", {
        "parameters": {"source": source, "session_id": sid, "user_id": user, "language": "en", "vocabulary": [tag]},
        "idempotency_key": sid, "job_variables": {"env": env}})
    return sid, run["id"]


class RowHistory(threading.Thread):
    """Every (status, progress) the session's row shows, read every 50 ms."""

    def __init__(self, fly: FlyStack, sid: str):
        super().__init__(daemon=True)
        from blocks.status_store import PostgresStatusStore

        self.store, self.sid, self.seen, self.stop = PostgresStatusStore(url=fly.status_url), sid, [], False

    def run(self):
        while not self.stop:
            if (r := self.store.get(self.sid)) is not None and (not self.seen or self.seen[-1] != (r.status.value, r.progress)):
                self.seen.append((r.status.value, r.progress))
            time.sleep(0.05)


def parts_of(fly: FlyStack, run_id: str) -> list[dict]:
    """The transcribe-part runs linked to this parent (as subflow runs of its run_deployment tasks)."""
    tasks = fly.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    linked = {t["id"] for t in tasks if "run_deployment" in (t.get("task_key") or "")}
    runs = fly.api("POST", "/flow_runs/filter", {"flows": {"name": {"any_": ["transcribe-part"]}}, "limit": 200})
    return sorted((r for r in runs if r["parent_task_run_id"] in linked), key=lambda r: r["created"])


def result(fly: FlyStack, sid: str) -> dict:
    import json

    return json.loads(fly.s3.block().get_bytes(f"results/{sid}.json"))


def wait_gone(fly: FlyStack, timeout_s: float = 90) -> list:
    deadline = time.monotonic() + timeout_s
    while fly.fly.live(RUNS_APP) and time.monotonic() < deadline:
        time.sleep(0.3)
    return fly.fly.live(RUNS_APP)


def requested_files(fly: FlyStack, tag: str) -> list[str]:
    """The chunk file of each transcription request of one session (its prompt names it), in arrival order."""
    return [(r["form"].get("file") or {}).get("filename", "") for r in list(fly.openai.requests)
            if r["path"] == "/v1/audio/transcriptions" and tag in str(r["form"].get("prompt") or "")]


def state(run: dict) -> str | None:
    return (run.get("state") or {}).get("type")


def chunk_names(part: dict) -> set[str]:
    return {c["key"].rsplit("/", 1)[-1] for c in part["parameters"]["part"]["chunks"]}


@pytest.fixture(scope="module")
def runs(fly: FlyStack, mix):
    """Four sessions of the same mix at once, each request of theirs told apart by its prompt:
    - single: VIBEINSIGHT_FANOUT=off, the reference;
    - fanned: fanned out (the parent keeps the first part), its row recorded throughout;
    - killed: in halves, one chunk in flight per part (VIBEINSIGHT_OPENAI_CONCURRENCY=1); the part
      run's Machine is killed once its first chunk is done and before its last is sent;
    - cancelled: fanned out, the parent cancelled once its part runs have their Machines;
    - failed: fanned out, every transcription request of its part runs refused (OpenAI quota
      exhausted; the parent's own chunks, named as on its disk, pass).
    The stand-in answers each request after 3 s, so the parts are caught mid-run."""
    fly.openai.delay_s = 3
    answer = fly.openai.handle

    def out_of_quota(rec: dict):  # the "failed" session's part runs meet OpenAI's 429 of an empty account
        name = (rec["form"].get("file") or {}).get("filename", "")
        if "tagfailed" in str(rec["form"].get("prompt") or "") and re.match(r"^\d{5}-", name):  # a bucket key's
            return 429, {}, error("You exceeded your current quota, please check your plan and billing details.",
                                  "insufficient_quota", "insufficient_quota")
        return answer(rec)

    fly.openai.handle = out_of_quota
    out: dict = {}
    try:
        for name, env in (("single", {"VIBEINSIGHT_FANOUT": "off"}), ("fanned", FANNED),
                          ("killed", {**HALVES, "VIBEINSIGHT_OPENAI_CONCURRENCY": "1"}), ("cancelled", FANNED),
                          ("failed", FANNED)):
            out[name] = start(fly, mix.path, env, f"tag{name}")
        history = RowHistory(fly, out["fanned"][0])
        history.start()
        killed_run, cancelled_run = out["killed"][1], out["cancelled"][1]
        kill: dict = {}
        cancelled = False
        deadline = time.monotonic() + 400
        while not (kill and cancelled):
            assert time.monotonic() < deadline, f"no kill {kill} or cancel {cancelled}; logs in {fly.logs}"
            if not kill:
                parts = parts_of(fly, killed_run)
                sent = requested_files(fly, "tagkilled")
                # a part with its first chunk done (its second sent) and more still to send: surely mid-run
                mid = [p for p in parts if 2 <= len(chunk_names(p) & set(sent)) < len(chunk_names(p))]
                if mid:
                    for p in mid:
                        for m in fly.fly.by_run(p["id"]):
                            fly.fly.kill(m.id)
                    # chunks run one at a time: all but a part's last request had been answered (and cached)
                    kill = dict(parts={p["id"] for p in mid}, finished={
                        f for p in mid for f in [x for x in sent if x in chunk_names(p)][:-1]})
            if not cancelled:
                parts = parts_of(fly, cancelled_run)
                if len(parts) >= 2 and all(fly.fly.by_run(p["id"]) for p in parts):
                    fly.api("POST", f"/flow_runs/{cancelled_run}/set_state",
                            {"state": {"type": "CANCELLING"}, "force": True})
                    cancelled = True
            time.sleep(0.05)
        out["states"] = fly.wait_runs([out[n][1] for n in ("single", "fanned", "killed", "cancelled", "failed")],
                                      timeout_s=400)
        out["kill"] = kill
        fly.row(out["fanned"][0], {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
        time.sleep(0.3)
        history.stop = True
        history.join()
        out["history"] = history.seen
        out["cancelled_parts"] = fly.wait_runs([p["id"] for p in parts_of(fly, cancelled_run)], timeout_s=120)
    finally:
        fly.openai.delay_s = 0
        fly.openai.handle = answer
    return out


def test_a_long_recording_runs_as_one_parent_and_parts_each_in_its_own_machine(fly: FlyStack, runs):
    (single_sid, single_run), (sid, run_id) = runs["single"], runs["fanned"]
    assert runs["states"][single_run][0] == runs["states"][run_id][0] == "COMPLETED", runs["states"]
    parts = parts_of(fly, run_id)
    assert len(parts) == 2 and {state(p) for p in parts} == {"COMPLETED"}
    assert parts_of(fly, single_run) == []  # VIBEINSIGHT_FANOUT=off: one run did it all
    doc, ref = result(fly, sid), result(fly, single_sid)
    assert doc["schema_version"] == "1.3" and ref["parts"] is None
    # the first part is the parent's own, the others part runs
    assert [p["flow_run_id"] for p in doc["parts"]] == [run_id, *(p["id"] for p in parts)]
    chunks = [c["index"] for c in doc["transcode"]["chunks"]]
    assert [i for p in doc["parts"] for i in p["chunks"]] == chunks and len(chunks) >= len(parts)
    assert sum(p["audio_s"] for p in doc["parts"]) == pytest.approx(doc["transcode"]["chunks"][-1]["end"], abs=0.01)
    assert all(p["wall_s"] > 0 and p["attempts"] == 1 for p in doc["parts"])
    # each run in its own Machine, all destroyed at the end
    for r in [run_id, *(p["id"] for p in parts)]:
        (machine,) = fly.fly.by_run(r)
        assert machine.env["PREFECT__FLOW_RUN_ID"] == r
    assert wait_gone(fly) == []
    # every chunk transcribed once, whether by one run or by the parts
    for tag in ("tagsingle", "tagfanned"):
        assert sorted(Counter(requested_files(fly, tag)).values()) == [1] * len(chunks)
    # each part's Machine time is booked under the session, as the parent's is
    from blocks.usage_ledger import SQLiteUsageLedger
    from vibeinsight.quota import current_month, month_bounds

    (db,) = (fly.tmp / "worker-home").rglob("usage.db")
    deadline = time.monotonic() + 30  # the worker books a Machine once it has seen it exit
    while True:
        frame = SQLiteUsageLedger(path=str(db)).events(*month_bounds(current_month(datetime.now(timezone.utc)))[:2])
        booked = frame[(frame["kind"] == "machine_run") & (frame["session_id"] == sid)]
        if len(booked) >= 1 + len(parts) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(booked) == 1 + len(parts)


def test_the_fanned_transcript_and_speakers_equal_the_single_runs(fly: FlyStack, runs):
    doc, ref = result(fly, runs["fanned"][0]), result(fly, runs["single"][0])
    got, want = doc["transcript"], ref["transcript"]
    assert got["text"] == want["text"]
    assert [(s["start"], s["end"], s["text"]) for s in got["segments"]] == \
        [(s["start"], s["end"], s["text"]) for s in want["segments"]]
    # two voices, one clustering over all parts: the same labels as the single run, across parts
    assert got["diarization"] == want["diarization"] and got["diarization"]["speakers"] == 2
    assert [s["speaker"] for s in got["segments"]] == [s["speaker"] for s in want["segments"]]
    by_part = [{s["speaker"] for s in got["segments"] if p["chunks"][0] <= _chunk_of(doc, s) <= p["chunks"][-1]}
               for p in doc["parts"]]
    assert set.union(*by_part) == {"S1", "S2"}


def _chunk_of(doc: dict, segment: dict) -> int:
    return next(c["index"] for c in doc["transcode"]["chunks"] if c["start"] <= segment["start"] < c["end"] + 1e-6)


def test_the_rows_progress_never_goes_down_and_parts_never_write_it(runs):
    history = runs["history"]
    progress = [p for s, p in history if s == "RUNNING"]
    assert progress == sorted(progress) and len(set(progress)) >= 4, history
    assert history[-1] == ("COMPLETED", 100)
    assert all(s in ("PENDING", "RUNNING", "COMPLETED") for s, _ in history), history  # no part's COMPLETED early
    assert [s for s, _ in history].index("COMPLETED") == len(history) - 1


def test_a_part_machine_killed_mid_run_is_run_again_with_its_finished_chunks_from_the_cache(fly: FlyStack, runs):
    sid, run_id = runs["killed"]
    kill = runs["kill"]
    assert runs["states"][run_id][0] == "COMPLETED"
    assert {state(p) for p in parts_of(fly, run_id) if p["id"] in kill["parts"]} == {"CRASHED"}
    doc = result(fly, sid)
    reruns = [p for p in doc["parts"] if p["attempts"] == 2]
    assert len(reruns) == len(kill["parts"]) and not {p["flow_run_id"] for p in reruns} & kill["parts"]
    counts = Counter(requested_files(fly, "tagkilled"))
    assert len(counts) == len(doc["transcode"]["chunks"]) and kill["finished"]
    assert all(counts[f] == 1 for f in kill["finished"]), counts  # a finished chunk never paid twice
    assert sum(counts.values()) <= len(counts) + len(kill["parts"])  # only the requests the kill cut off again
    cached = fly.api("POST", "/task_runs/filter", {
        "flow_runs": {"id": {"any_": [p["flow_run_id"] for p in reruns]}},
        "task_runs": {"state": {"name": {"any_": ["Cached"]}}}})
    assert len(cached) >= len(kill["finished"])  # they came back from the bucket's cache
    # each chunk's billed call is in the session's usage once, the killed attempt's finished chunks too: they
    # came back from the cache paid by an attempt that booked nothing (vibeinsight.paid). A request the kill
    # cut off was sent again, and only its answered twin is known.
    assert doc["usage"]["api_calls"]["openai"] == len(counts), (doc["usage"], counts)
    assert wait_gone(fly) == []


def test_cancelling_the_parent_cancels_its_parts_and_leaves_no_machine(fly: FlyStack, runs):
    sid, run_id = runs["cancelled"]
    assert runs["states"][run_id][0] == "CANCELLED"
    assert {s for s, _ in runs["cancelled_parts"].values()} == {"CANCELLED"} and len(runs["cancelled_parts"]) >= 2
    assert fly.row(sid, {"CANCELLED"}).status.value == "CANCELLED"
    assert wait_gone(fly) == []


def test_a_part_that_fails_twice_fails_the_session_with_its_code(fly: FlyStack, runs):
    sid, run_id = runs["failed"]
    assert runs["states"][run_id][0] == "FAILED"
    parts = parts_of(fly, run_id)
    by_part: dict = {}
    for p in parts:
        by_part.setdefault(p["parameters"]["part"]["part"], []).append(state(p))
    assert ["FAILED", "FAILED"] in by_part.values(), by_part  # run again once, then the session fails
    assert all(len(states) <= 2 for states in by_part.values())
    row = fly.row(sid, {"FAILED"})
    assert row.error_code == "api_quota_exhausted"  # the part's own code, not a generic one
    doc = result(fly, sid)
    assert doc["status"] == "FAILED" and doc["error"]["code"] == "api_quota_exhausted"
    # the refused calls of both runs of the part that failed are the session's too (the parent's own pass)
    assert doc["usage"]["failed_calls"].get("openai", 0) >= 2, doc["usage"]
    assert wait_gone(fly) == []
