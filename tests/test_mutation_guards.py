"""The promises bin/mutate found no test holding (docs/mutation.md): upload keys and run parameters
refused with a message that names what was wrong, the retry waits and the metered call's counts and
span, the status rule's log line and sequence clock, and the quota guard's thresholds, shares and
reasons. Pure logic: no server, no clock read (the sequence clock gets a fixed one)."""

from __future__ import annotations

import logging
import types
from datetime import datetime, timezone

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tenacity import RetryCallState, Retrying

import vibeinsight.status_rule as status_rule
from vibeinsight import tracing
from vibeinsight.errors import InputRejected, PipelineError, user_message
from vibeinsight.keys import MAX_KEY_BYTES, InvalidKey, split_s3_uri, validate_upload_key
from vibeinsight.params import check_ids, check_s3_source, workspace_for
from vibeinsight.quota import GB, QuotaLimits, guard_decision
from vibeinsight.retry import Transient, backoff, metered_call, wait_retry_after
from vibeinsight.status_rule import next_seq, seq_of, update_for_state
from vibeinsight.usage import ServiceUsage

pytestmark = pytest.mark.unit

USER = "0d1c2b3a-4f5e-4d6c-8b7a-9f8e7d6c5b4a"


def _refused(fn, *args) -> str:
    with pytest.raises((InvalidKey, InputRejected)) as info:
        fn(*args)
    return str(info.value)


# --- keys ----------------------------------------------------------------------------------------

def test_a_key_is_at_most_s3s_1024_bytes_and_the_message_says_so():
    assert validate_upload_key("u/" + "a" * (MAX_KEY_BYTES - 2), ["u/"])  # exactly the limit: accepted
    assert "1..1024 bytes" in _refused(validate_upload_key, "u/" + "a" * (MAX_KEY_BYTES - 1), ["u/"])
    assert "1..1024 bytes" in _refused(validate_upload_key, "", ["u/"])


@pytest.mark.parametrize(("key", "says"), [
    ("/u/a.wav", "must be relative"),  # a leading slash alone
    ("u/s3://b/a.wav", "must be relative"),  # a scheme alone
    ("u/a\x07.wav", "control character"),
    ("u/./a.wav", "'.' or '..' part"),
    ("u/../a.wav", "'.' or '..' part"),
    ("v/a.wav", "outside the allowed prefixes ['u/']"),
])
def test_each_refused_key_says_why(key, says):
    message = _refused(validate_upload_key, key, ["u/"])
    assert says in message and repr(key) in message


def test_s3_uris_and_bare_keys_split_as_written():
    assert split_s3_uri("s3://b/Xray.wav", "d") == ("b", "Xray.wav")  # only slashes are stripped
    assert split_s3_uri("/uploads/x.wav", "d") == ("d", "uploads/x.wav")
    assert split_s3_uri("Xray.wav", "d") == ("d", "Xray.wav")
    assert split_s3_uri("uploads/x.wav/", "d") == ("d", "uploads/x.wav/")
    assert "is not s3://bucket/key" in _refused(split_s3_uri, "s3://b", "d")
    assert "only s3:// sources" in _refused(split_s3_uri, "https://b/uploads/x.wav", "d")


# --- params --------------------------------------------------------------------------------------

def test_an_id_that_is_not_a_uuid_is_named_and_clipped_in_the_message():
    long = "x" * 79 + "YZ"
    for args, name in (((long, None), "session_id"), ((None, long), "user_id")):
        message = _refused(check_ids, *args)
        assert f"{name} must be a UUID, got {long[:80]!r}" in message
        assert "YZ" not in message  # clipped at 80 characters


def test_a_session_id_leaving_the_work_folder_is_clipped_in_the_message(tmp_path):
    bad = "../" + "y" * 77 + "Z"
    message = _refused(workspace_for, tmp_path, bad)
    assert f"session_id {bad[:80]!r} does not name a folder under the work folder" in message and "Z'" not in message


def test_an_s3_source_is_refused_with_its_reason(tmp_path):
    assert _refused(check_s3_source, "s3://bucket/uploads/x/a.wav", "bucket", ["uploads/"], None) == (
        "source_not_allowed: user_id is required to read an upload from object storage")
    other = _refused(check_s3_source, f"s3://elsewhere/uploads/{USER}/a.wav", "bucket", ["uploads/"], USER)
    assert "'elsewhere' is not the configured bucket" in other
    long = f"s3://bucket/uploads/{'n' * 190}/END.wav"
    message = _refused(check_s3_source, long, "bucket", ["uploads/"], USER)
    assert repr(long[:200]) in message and "END" not in message.split(": ", 1)[0]
    # a prefix's own trailing slashes only are dropped before the user's folder is added
    check_s3_source(f"s3://bucket/uploadX/{USER}/a.wav", "bucket", ["uploadX/"], USER)


# --- retry ---------------------------------------------------------------------------------------

def _state(attempt: int, exc: BaseException | None) -> RetryCallState:
    rs = RetryCallState(Retrying(), None, (), {})
    rs.attempt_number = attempt
    if exc is not None:
        rs.set_exception((type(exc), exc, None))
    return rs


def test_transient_keeps_its_message():
    assert str(Transient("busy", 3, 503)) == "busy"


def test_backoff_defaults_are_half_a_second_doubling_to_thirty(monkeypatch):
    import tenacity.wait

    monkeypatch.setattr(tenacity.wait.random, "uniform", lambda low, high: high)  # the top of each window
    assert [backoff()(_state(n, None)) for n in (1, 2, 3, 20)] == [0.5, 1.0, 2.0, 30.0]


def test_the_wait_falls_back_without_an_error_or_a_retry_after(monkeypatch):
    wait = wait_retry_after(fallback=lambda rs: 4.0)
    assert wait(_state(1, None)) == 4.0  # no outcome yet
    assert wait(_state(1, ValueError("no retry_after attribute"))) == 4.0


@pytest.fixture()
def spans(monkeypatch) -> InMemorySpanExporter:
    """The spans tracing.span records, in memory (a private provider: the global one is untouched)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    return exporter


def test_a_metered_call_is_one_span_with_its_counts_and_each_retry(spans):
    usage = ServiceUsage(service="openai", model="whisper-1")
    usage.calls, usage.retries, usage.bytes_sent = 5, 2, 100  # an earlier call's counts: not this span's
    answers = iter([Transient("e" * 300, 0, 503), "ok"])

    def call():
        usage.bytes_sent += 40
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert metered_call(call, usage, lambda e: e, attempts=3, error=PipelineError, sleep=lambda s: None, size=7) == "ok"
    assert (usage.calls, usage.retries, usage.failed) == (7, 3, 1)
    (span,) = spans.get_finished_spans()
    assert span.name == "openai.request"
    assert dict(span.attributes) == {"vibeinsight.service": "openai", "vibeinsight.model": "whisper-1",
                                     "vibeinsight.size": 7, "vibeinsight.calls": 2, "vibeinsight.retries": 1,
                                     "vibeinsight.bytes_sent": 80}
    (event,) = span.events
    assert event.name == "retry" and dict(event.attributes) == {"error": "e" * 200}


def test_a_final_error_that_refuses_attributes_still_propagates():
    class Frozen(Exception):
        def __setattr__(self, name, value):
            if name == "usage":  # as some SDK errors refuse new attributes
                raise AttributeError(name)
            super().__setattr__(name, value)

    usage = ServiceUsage(service="gemini")
    with pytest.raises(Frozen):
        metered_call(lambda: 1 / 0, usage, lambda e: Frozen("no"), attempts=2, error=PipelineError,
                     sleep=lambda s: None)
    assert (usage.calls, usage.failed) == (1, 1)


# --- status rule ---------------------------------------------------------------------------------

IDS = dict(session_id=USER, flow_run_id="run-1", user_id=None)


@pytest.mark.parametrize("state", ["CRASHED", "CANCELLED"])
def test_an_ended_run_speaks_the_runs_language(state):
    u = update_for_state(state, seq=1, language="ja", **IDS)
    assert u.error_message == user_message(state.lower(), "ja") != user_message(state.lower())


def test_only_a_terminal_state_with_a_message_is_logged(caplog):
    caplog.set_level(logging.INFO, logger="vibeinsight.status")
    update_for_state("RUNNING", seq=1, message="started", **IDS)
    update_for_state("COMPLETED", seq=2, **IDS)
    assert caplog.records == []
    update_for_state("FAILED", seq=3, message="boom", **IDS)
    (record,) = caplog.records
    assert record.getMessage() == f"session {USER}: FAILED (boom)"


def test_the_sequence_clock_is_microseconds_and_steps_by_one_when_the_clock_stands(monkeypatch):
    monkeypatch.setattr(status_rule, "time", types.SimpleNamespace(time_ns=lambda: 5_000_000_000_123))
    monkeypatch.setattr(status_rule, "_last_seq", 0)
    assert [next_seq(), next_seq(), next_seq()] == [5_000_000_000, 5_000_000_001, 5_000_000_002]


def test_state_timestamps_of_any_day_map_to_the_same_clock():
    assert seq_of("1970-01-02T00:00:00+00:00") == 86_400_000_000
    assert seq_of(datetime(1970, 1, 3, 0, 0, 1, 5, tzinfo=timezone.utc)) == 172_801_000_005
    assert seq_of(datetime(1970, 1, 2)) == 86_400_000_000  # naive means UTC


# --- the quota guard -----------------------------------------------------------------------------

AS_OF = datetime(2026, 11, 30, 23, tzinfo=timezone.utc)  # the whole month elapsed: forecast = actual


def free(**kw) -> QuotaLimits:
    return QuotaLimits(**{"plan": "free", "egress_limit_bytes": 5 * GB, "egress_hard_limit": True,
                          "realtime_connections": 200, "realtime_messages_per_s": 100,
                          "realtime_messages_month": 2_000_000, **kw})


def pro(**kw) -> QuotaLimits:
    return QuotaLimits(**{"plan": "pro", "egress_limit_bytes": 250 * GB, "egress_overage_usd_per_gb": 0.09,
                          "realtime_connections": 500, "realtime_messages_per_s": 500,
                          "realtime_messages_month": 5_000_000, "realtime_messages_overage_usd_per_million": 2.5,
                          **kw})


def day(**totals) -> dict:
    return {"2026-11-10": totals}


def test_the_warning_share_is_80_percent_by_default_and_reached_at_it():
    d = guard_decision(day(supabase_egress_bytes=4 * GB, sessions=40), free(), AS_OF)
    assert (d.mode, d.resource) == ("compact", "supabase.egress_bytes")
    assert d.reason == "supabase.egress_bytes is at 80.0 % of the free plan (now)"
    below = guard_decision(day(supabase_egress_bytes=int(3.99 * GB), sessions=40), free(), AS_OF)
    assert (below.mode, below.reason) == ("normal", "within plan and budget")


def test_a_forecast_past_the_limit_compacts_with_its_basis():
    d = guard_decision({"2026-11-01": {"supabase_egress_bytes": 1 * GB}}, free(), datetime(2026, 11, 2, tzinfo=timezone.utc))
    assert (d.mode, d.resource) == ("compact", "supabase.egress_bytes")
    assert d.reason.endswith("% of the free plan (forecast for month end)") and d.forecast_pct >= 100


def test_realtime_messages_near_the_quota_compact_and_are_reported():
    d = guard_decision(day(realtime_messages=1_700_000, sessions=100), free(), AS_OF)
    assert (d.mode, d.resource, d.realtime_messages, d.realtime_messages_pct) == (
        "compact", "supabase.realtime_messages", 1_700_000, 85.0)
    assert d.reason == "supabase.realtime_messages is at 85.0 % of the free plan (now)"
    early = guard_decision({"2026-11-01": {"realtime_messages": 300_000, "sessions": 1}}, free(),
                           datetime(2026, 11, 2, tzinfo=timezone.utc))
    assert (early.mode, early.resource) == ("compact", "supabase.realtime_messages")
    assert early.reason.endswith("(forecast for month end)")


def test_free_realtime_messages_are_a_hard_quota():
    d = guard_decision(day(realtime_messages=1_999_990, sessions=10), free(), AS_OF)
    assert (d.mode, d.resource) == ("refuse", "supabase.realtime_messages")
    assert "of the free plan's 2,000,000 Realtime messages (100.0 %)" in d.reason
    assert "one more session (about 199,999) would cross it" in d.reason


def test_the_refusal_says_how_much_of_the_plan_is_used():
    d = guard_decision(day(supabase_egress_bytes=int(4.5 * GB), sessions=1), free(), AS_OF)
    assert (d.mode, d.resource) == ("refuse", "supabase.egress_bytes")
    assert d.reason == ("this month has used 4,500,000,000 of the free plan's 5 GB of Supabase egress (90.0 %); "
                        "one more session (about 4,500,000,000) would cross it")


def test_a_session_that_would_just_reach_the_limit_is_not_refused():
    d = guard_decision(day(supabase_egress_bytes=4 * GB, sessions=4), free(), AS_OF)  # 4 + 1 GB = the limit
    assert d.mode == "compact"


def test_limit_pct_is_the_share_of_the_limit_that_refuses():
    at_60 = guard_decision(day(supabase_egress_bytes=3 * GB, sessions=30), free(), AS_OF, limit_pct=50)
    assert (at_60.mode, at_60.resource) == ("refuse", "supabase.egress_bytes")
    # 2.4 GB used (48 %) in 12 sessions of 0.2 GB: the next one would cross 50 %
    next_one = guard_decision(day(supabase_egress_bytes=int(2.4 * GB), sessions=12), free(), AS_OF, limit_pct=50)
    assert next_one.mode == "refuse"
    # exactly at the share, with no session booked yet (nothing per session): refused all the same
    at_share = guard_decision(day(supabase_egress_bytes=int(2.5 * GB)), free(), AS_OF, limit_pct=50)
    assert at_share.mode == "refuse"


def test_the_budget_counts_paid_overage_and_reports_the_cost():
    d = guard_decision(day(supabase_egress_bytes=260 * GB, realtime_messages=6_500_000, cost_usd=1.2345674,
                           sessions=10), pro(), AS_OF, budget_usd=100.0)
    # 10 GB past the 250 GB at $0.09, and 2 started millions of messages past 5 million at $2.5
    assert d.cost_usd == round(1.2345674 + 0.9 + 5.0, 6) == 7.134567
    assert (d.budget_usd, d.realtime_messages, d.realtime_messages_pct) == (100.0, 6_500_000, 130.0)
    assert d.mode == "compact"  # paid plans bill past their quotas: near, not refused
    over = guard_decision(day(cost_usd=9.0, sessions=3), pro(), AS_OF, budget_usd=10.0)
    assert (over.mode, over.resource) == ("refuse", "budget.cost_usd")
    assert "budget of $10 (VIBEINSIGHT_BUDGET_USD)" in over.reason


def test_spend_without_sessions_is_not_refused_below_the_budget():
    d = guard_decision(day(cost_usd=9.5), pro(), AS_OF, budget_usd=10.0)
    assert d.mode == "normal" and d.cost_usd == 9.5
