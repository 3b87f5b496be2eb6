"""Fan-out's pure parts (vibeinsight/fanout.py): when it pays, how chunks become parts, what a part
run accepts, the progress over parts, what happens to a part that ended, and clustering the parts'
speaker windows together (the Diarizer's split)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from pydantic import ValidationError

from vibeinsight.diarization import Diarizer
from vibeinsight.fanout import (
    PartRequest,
    Progress,
    SpeakerWindows,
    next_step,
    part_result_key,
    plan_parts,
    run_prefix,
    should_fan_out,
)

pytestmark = pytest.mark.unit

SID, PARENT = str(uuid.uuid4()), str(uuid.uuid4())


def spans_of(lengths: list[float]) -> list[tuple[float, float]]:
    out, t = [], 0.0
    for n in lengths:
        out.append((t, t + n))
        t += n
    return out


def test_parts_are_consecutive_chunks_of_about_the_part_length():
    plan = plan_parts(spans_of([60.0] * 60), part_s=300, max_parts=16)  # an hour of 60 s chunks
    assert len(plan) == 12 and all(len(p) == 5 for p in plan)
    assert [i for p in plan for i in p] == list(range(60))  # every chunk once, in order


def test_parts_grow_to_stay_within_max_parts_and_never_split_a_chunk():
    plan = plan_parts(spans_of([60.0] * 60), part_s=300, max_parts=4)
    assert [len(p) for p in plan] == [15, 15, 15, 15]
    uneven = plan_parts(spans_of([10, 50, 10, 50, 10, 50, 20]), part_s=100, max_parts=16)
    assert [i for p in uneven for i in p] == list(range(7)) and len(uneven) == 2 and all(uneven)
    # each part's audio is near the target; a boundary is put where it lands nearest
    audio = [sum(n for n in [10, 50, 10, 50, 10, 50, 20][p[0]:p[-1] + 1]) for p in uneven]
    assert abs(audio[0] - 100) <= 30


def test_the_parents_own_part_is_longer_by_the_lead_and_the_others_share_the_rest():
    # an hour of 60 s chunks, 12 parts: the first (the parent's) 5 minutes longer than the others
    plan = plan_parts(spans_of([60.0] * 60), part_s=300, max_parts=16, lead_s=300)
    assert len(plan) == 12 and [i for p in plan for i in p] == list(range(60))
    # shares of 275 s, the first 575 s: it closes at 600 s (nearer than 540), the rest in 4 or 5 chunks
    assert len(plan[0]) == 10 and all(len(p) in (4, 5) for p in plan[1:])
    # the lead never takes more than half the audio, and one part has none
    capped = plan_parts(spans_of([10.0] * 10), part_s=50, max_parts=16, lead_s=1000)
    assert [len(p) for p in capped] == [7, 3]  # lead 50 of 100 s: shares 25 + 50 and 25
    assert plan_parts(spans_of([10.0] * 3), part_s=300, max_parts=16, lead_s=300) == [[0, 1, 2]]


def test_a_short_recording_or_few_chunks_stay_few_parts():
    assert plan_parts(spans_of([30.0, 30.0]), part_s=300, max_parts=16) == [[0, 1]]
    assert plan_parts(spans_of([400.0, 400.0]), part_s=100, max_parts=16) == [[0], [1]]  # no more parts than chunks
    assert plan_parts([], part_s=300, max_parts=16) == []


def test_fan_out_only_when_asked_long_enough_deployed_and_in_the_bucket():
    assert should_fan_out("auto", 601, 600, deployed=True, remote_storage=True)
    assert not should_fan_out("off", 6000, 600, deployed=True, remote_storage=True)
    assert not should_fan_out("auto", 599, 600, deployed=True, remote_storage=True)
    assert not should_fan_out("auto", 6000, 600, deployed=False, remote_storage=True)  # `vibeinsight process`
    assert not should_fan_out("auto", 6000, 600, deployed=True, remote_storage=False)


def request(**over) -> dict:
    base = dict(session_id=SID, parent_run_id=PARENT, part=0, content_id="a" * 64, language="en",
                chunks=[dict(index=0, key=f"{run_prefix(SID, PARENT)}00000-mix_000.ogg", offset=0.0, duration=60.0)])
    return {**base, **over}


def test_a_part_request_is_checked_where_it_enters():
    req = PartRequest.model_validate(request(session_id=SID.upper()))
    assert req.session_id == SID and req.result_key == part_result_key(SID, PARENT, 0)
    assert req.result_key.startswith("prefect-results/")  # the runs' workspace prefix: their key may write there
    other = str(uuid.uuid4())
    bad = [
        request(session_id="../x"),
        request(parent_run_id="not-a-uuid"),
        request(content_id="../../etc"),
        request(chunks=[]),
        request(part=-1),
        request(chunks=[dict(index=0, key=f"{run_prefix(other, PARENT)}a.ogg", offset=0, duration=1)]),  # another session
        request(chunks=[dict(index=0, key=f"{run_prefix(SID, PARENT)}../x.ogg", offset=0, duration=1)]),
        request(chunks=[dict(index=0, key="uploads/u/call.flac", offset=0, duration=1)]),
        request(chunks=[dict(index=0, key=f"{run_prefix(SID, PARENT)}a.ogg", offset=float("nan"), duration=1)]),
        request(chunks=[dict(index=0, key=f"{run_prefix(SID, PARENT)}a.ogg", offset=float("inf"), duration=1)]),
        request(chunks=[dict(index=0, key=f"{run_prefix(SID, PARENT)}a.ogg", offset=-1, duration=1)]),
        request(chunks=[dict(index=0, key=f"{run_prefix(SID, PARENT)}a.ogg", offset=0, duration=0)]),
        request(vocabulary=[" "]),
        request(speakers=0),
    ]
    for params in bad:
        with pytest.raises(ValidationError):
            PartRequest.model_validate(params)


def test_the_flow_rejects_a_part_of_another_session_as_invalid_parameter():
    from flows.transcribe_part import check_request
    from vibeinsight.errors import InputRejected

    assert check_request(SID, request()).part == 0
    with pytest.raises(InputRejected) as err:
        check_request(str(uuid.uuid4()), request())  # the ledger's session must be the part's
    assert err.value.code == "invalid_parameter"
    with pytest.raises(InputRejected):
        check_request(SID, request(chunks=[dict(index=0, key="results/x.json", offset=0, duration=1)]))


def test_a_crashed_or_failed_part_runs_once_more_then_fails_the_session():
    assert next_step("COMPLETED", 1) == "done"
    assert next_step("CRASHED", 1) == "rerun" and next_step("FAILED", 1) == "rerun"
    assert next_step("CRASHED", 2) == "fail" and next_step("FAILED", 2) == "fail"
    assert next_step("CANCELLED", 1) == "fail"
    assert {next_step(s, 1) for s in ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING")} == {"wait"}


def test_progress_over_parts_is_weighted_by_audio_and_never_goes_down():
    p = Progress([(300.0, 5), (100.0, 1)])
    seen = [p.update(0, 2), p.update(1, 0), p.update(0, 0), p.update(0, 9), p.finish(1)]
    assert seen == sorted(seen)  # a re-run part reporting 0 again does not pull the bar back
    assert seen[0] == pytest.approx(300 * 2 / 5 / 400) and seen[-1] == pytest.approx(1.0)


def test_speaker_windows_travel_losslessly_and_cluster_as_one_pass():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=192), rng.normal(size=192)
    voices = [a, b, a, b]  # two voices alternating over four chunks

    def windows(chunk: int) -> tuple[list, list, np.ndarray]:
        centres = [chunk * 10 + 0.75 * k + 0.75 for k in range(8)]
        emb = np.stack([voices[chunk] + 0.05 * rng.normal(size=192) for _ in centres]).astype(np.float32)
        return [(chunk * 10.0, chunk * 10.0 + 7.0)], centres, emb

    whole = Diarizer()
    parts = [Diarizer(), Diarizer()]
    for chunk in range(4):
        whole.extend(*windows(chunk))
        parts[chunk // 2].extend(*whole_last(whole))
    merged = Diarizer()
    for d in parts:
        shipped = SpeakerWindows.model_validate_json(SpeakerWindows.of(*d.windows()).model_dump_json())
        merged.extend(shipped.spans, shipped.centres, shipped.array())
    one, fanned = whole.finish(), merged.finish()
    assert fanned == one and fanned.speakers == 2
    # the first part holds voices a, b; the second b's label is the same as in the first part
    assert fanned.speaker_at(31, 32) == fanned.speaker_at(11, 12) != fanned.speaker_at(1, 2)


def whole_last(d: Diarizer) -> tuple[list, list, np.ndarray]:
    spans, centres, emb = d.windows()
    return spans[-1:], centres[-8:], emb[-8:]


def test_speaker_windows_refuse_a_count_that_does_not_match():
    w = SpeakerWindows.of([(0.0, 1.0)], [0.5, 1.0], np.zeros((2, 192), np.float32))
    w.centres.append(2.0)
    with pytest.raises(ValueError):
        w.array()
