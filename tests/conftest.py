"""Fixtures every tier shares, and the tier rule: each test carries exactly one of the markers
unit, integration or e2e (pyproject.toml registers them; `pytest -m unit` runs one tier)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"  # the test audio, in the repository (see data/README.md)
SAMPLE = ROOT / "vibeinsight" / "samples" / "standup-en.ogg"
TIERS = ("unit", "integration", "e2e")

# fixtures of the helper modules, for every test: pg_url (tests/pg.py), s3_server and moto_sts_endpoint
pytest_plugins = ["tests.pg", "tests.s3_server"]


def pytest_configure(config):
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Each pytest process (each xdist worker) and every process it starts gets its own Prefect home
    # (profiles, local result storage, an ephemeral server's SQLite): workers side by side share none.
    # Set before any test module imports prefect, which reads its settings at import.
    home = tempfile.mkdtemp(prefix=f"vi-prefect-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
    os.environ["PREFECT_HOME"] = home
    # Bytecode is written (into .venv and the gitignored __pycache__ folders) and read by every later
    # process: with PYTHONDONTWRITEBYTECODE set, as this machine's environment sets it, each of the
    # suite's ~400 Python processes compiled every module it imported from source, about a third of a
    # Prefect server's start and a quarter of a flow run's imports (docs/testing.md).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    _start_clock_shift(config)


# --- the clock moved (issue 18): `VIBEINSIGHT_TEST_CLOCK_SHIFT=+1month bin/test -m unit` (or --clock-shift)
# runs the session with this process's wall clock moved ahead and ticking (time-machine), so a test that
# reads today's date against a fixed month fails here instead of on the 1st. Only this process travels:
# subprocesses, PostgreSQL and monotonic clocks keep the real time; so does botocore's request signing,
# since the S3 server (SeaweedFS, a subprocess) refuses a SigV4 signature stamped a month off its own clock.
CLOCK_SHIFT_ENV = "VIBEINSIGHT_TEST_CLOCK_SHIFT"
_traveller = None


def pytest_addoption(parser):
    parser.addoption("--clock-shift", default=os.environ.get(CLOCK_SHIFT_ENV, ""),
                     help=f"move the wall clock ahead for the whole session: +1month, +1year, +40days (env {CLOCK_SHIFT_ENV})")


def shifted(now, shift: str):
    """`now` moved by `shift` ("+1month", "+2years", "+40days"); a day past the month's end is clipped."""
    import calendar
    import re
    from datetime import timedelta

    m = re.fullmatch(r"\+?(\d+)\s*(day|month|year)s?", shift.strip().lower())
    if not m:
        raise pytest.UsageError(f"clock shift {shift!r}: expected +N day(s), +N month(s) or +N year(s)")
    n, unit = int(m[1]), m[2]
    if unit == "day":
        return now + timedelta(days=n)
    months = now.month - 1 + n * (12 if unit == "year" else 1)
    year, month = now.year + months // 12, months % 12 + 1
    return now.replace(year=year, month=month, day=min(now.day, calendar.monthrange(year, month)[1]))


def _start_clock_shift(config) -> None:
    global _traveller
    shift = config.getoption("--clock-shift", default="")
    if not shift:
        return
    from datetime import datetime, timezone

    import time_machine

    to = shifted(datetime.now(timezone.utc), shift)
    _traveller = time_machine.travel(to, tick=True)
    _traveller.start()
    import botocore.auth

    def signing_time(remove_tzinfo: bool = True) -> datetime:
        now = time_machine.escape_hatch.datetime.datetime.now(timezone.utc)
        return now.replace(tzinfo=None) if remove_tzinfo else now

    botocore.auth.get_current_datetime = signing_time
    config.stash[_shift_key] = f"clock shifted {shift}: tests run at {to.isoformat(timespec='seconds')}"


_shift_key = pytest.StashKey[str]()


@pytest.fixture(autouse=True)
def _real_clock_where_clocks_meet(request):
    """A test marked shares_clock runs on the real clock under --clock-shift: its timestamps meet another
    process's clock (PostgreSQL's now(), a Prefect server's), which refuses or defers what is stamped a
    month ahead of it, as the product means it to. The rest of the session stays moved."""
    global _traveller
    if _traveller is None or request.node.get_closest_marker("shares_clock") is None:
        yield
        return
    from datetime import datetime, timezone

    import time_machine

    from vibeinsight import status_rule

    offset = datetime.now(timezone.utc) - time_machine.escape_hatch.datetime.datetime.now(timezone.utc)
    _traveller.stop()
    _traveller = None
    # The process's status sequence never goes back (status_rule.next_seq): one drawn on the moved clock
    # would keep this test's writes a month ahead. It follows the real clock here, then resumes above both.
    shifted_seq, status_rule._last_seq = status_rule._last_seq, 0
    try:
        yield
    finally:
        status_rule._last_seq = max(shifted_seq, status_rule._last_seq)
        _traveller = time_machine.travel(datetime.now(timezone.utc) + offset, tick=True)
        _traveller.start()


def pytest_report_header(config):
    return config.stash.get(_shift_key, None)


def pytest_unconfigure(config):
    global _traveller
    if _traveller is not None:
        _traveller.stop()
        _traveller = None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Refuse a run in which any collected test has no tier or more than one (before -m selects)."""
    wrong = []
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {sorted(tiers) or 'no tier'}")
    if wrong:
        raise pytest.UsageError("every test needs exactly one of the markers unit, integration, e2e:\n  "
                                + "\n  ".join(wrong))
    if hasattr(config, "workerinput"):  # an xdist worker (.ci/run): hand out the longest modules first
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the file order otherwise


# The modules that take longest (seconds of one worker in a CI run, longest first). Under
# `-n N --dist loadfile --no-loadscope-reorder` a module stays on one worker (its module-scoped servers
# start once) and modules are handed out in collection order: these start first, so that none is left
# running alone at the end. (Without --no-loadscope-reorder xdist hands out the modules with the most
# tests first, which started the one-test 30-session fault scenario last: it ran alone for minutes.)
LONGEST_FIRST = ("test_load_faults.py", "test_fly_e2e.py", "test_flow.py", "test_deploy_e2e.py",
                 "test_fanout_e2e.py", "test_web_e2e.py", "test_upload_client_e2e.py", "test_cloud_flow.py",
                 "test_doctor.py", "test_current_run_e2e.py", "test_deploy_stack.py", "test_status_prefect.py",
                 "test_cli.py", "test_deploy_ui.py", "test_observability_cli.py", "test_flow_timeouts.py",
                 "test_package.py", "test_fly_worker.py", "test_quota_provider_runs.py", "test_storage_setup.py",
                 "test_outage_retry.py", "test_usage_never_lost.py", "test_hostile_input.py",
                 "test_transcribe_engine.py", "test_observability_worker.py", "test_flow_speakers.py")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test fails the run: a skip hides an untested path (a missing browser, server or
    tool is a setup error that bin/bootstrap fixes, and the failure says so)."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and a skip fails this suite (fix the setup, or delete the test): {reason}"
    return report


def pytest_collection_finish(session):
    """Integration and e2e tests decode real media: ffmpeg must be there (unit tests never call it)."""
    if any(item.get_closest_marker("unit") is None for item in session.items):
        for tool in ("ffmpeg", "ffprobe"):
            if not shutil.which(tool):
                raise pytest.UsageError(f"{tool} is not installed (bin/bootstrap installs it)")


@pytest.fixture(scope="session")
def audio() -> Path:
    """The folder of test recordings (tests/data)."""
    if not (DATA / "transcripts.json").is_file():
        pytest.fail(f"test audio missing at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def references(audio) -> dict:
    return json.loads((audio / "transcripts.json").read_text())


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One joined copy of the base model for the whole test session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(autouse=True)
def fresh_settings():
    """Settings are cached per process: each test reads its own environment, never the last test's
    (a cached status URL to another test's dropped database once failed an unrelated worker test)."""
    from vibeinsight.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture()
def home(tmp_path, monkeypatch, model_cache) -> Path:
    """A fresh VIBEINSIGHT_HOME per test (bucket, status db, workspace)."""
    from vibeinsight.settings import get_settings

    h = tmp_path / "home"
    monkeypatch.setenv("VIBEINSIGHT_HOME", str(h))
    (h).mkdir()
    (h / "models").symlink_to(model_cache, target_is_directory=True)
    get_settings.cache_clear()
    yield h
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's own in-process test harness (a real API on SQLite) for the flow tests. Tests of whole
    stacks use tests.prefect_server (a real `prefect server start`)."""
    import contextlib
    from unittest import mock

    from prefect.testing import utilities
    from prefect.testing.utilities import prefect_test_harness

    from tests.prefect_server import SEEDED_SERVER_ENV, drain_prefect_services, seed_sqlite

    def seeded_tempdir() -> str:
        # the harness's database file in its temporary folder: a copy of the template, migrated and with
        # the block types registered already (tests.prefect_server)
        folder = Path(tempfile.mkdtemp())
        seed_sqlite(folder, "prefect-test.db")
        return str(folder)

    with contextlib.ExitStack() as harness:
        harness.enter_context(mock.patch.object(utilities, "mkdtemp", seeded_tempdir))
        # Its server reads the environment when the harness starts it; only then, so that no later
        # subprocess (an embedded server on a new database) skips the registration it needs. The copy
        # holds the block types: entering took 3.4-3.9 s instead of 5.1-5.8 s (back to back).
        with mock.patch.dict(os.environ, SEEDED_SERVER_ENV):
            harness.enter_context(prefect_test_harness(server_startup_timeout=180))
        yield
        drain_prefect_services(timeout_s=60)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
