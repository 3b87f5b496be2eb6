"""The command line as a user runs it: a real process, Prefect's embedded server, real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE, sha256

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "vibeinsight"]


def vibeinsight(home: Path, *args: str, api_url: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["VIBEINSIGHT_HOME"] = str(home)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory, model_cache) -> Path:
    home = tmp_path_factory.mktemp("cli-home")
    (home / "models").symlink_to(model_cache, target_is_directory=True)
    return home


def test_process_sample_on_embedded_defaults(cli_home):
    """The README's command: the shipped sample, embedded Prefect, one JSON document, exit 0."""
    session = "4a7b1c9d-2e3f-4a5b-8c7d-9e0f1a2b3c4d"
    before = sha256(SAMPLE)
    p = vibeinsight(cli_home, "process", str(SAMPLE), "--session-id", session, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)  # exactly one document: json.loads rejects trailing output
    assert doc["status"] == "COMPLETED" and doc["session_id"] == session
    text = doc["transcript"]["text"].lower()
    assert "good morning" in text and "friday" in text
    assert doc["timings"]["startup"] > 0
    assert "Traceback" not in p.stderr and "CancelledError" not in p.stderr
    assert sha256(SAMPLE) == before
    s = vibeinsight(cli_home, "status", session, "--json")
    assert s.returncode == 0
    row = json.loads(s.stdout)
    assert list(row) == ["session_id", "user_id", "flow_run_id", "status", "stage", "progress", "error_code",
                         "error_message", "updated_at"]
    assert (row["status"], row["progress"], row["flow_run_id"]) == ("COMPLETED", 100, doc["flow_run_id"])


def test_rejected_input_exit_2_one_line_and_failed_document(cli_home, tmp_path):
    bad = tmp_path / "notes.mp3"
    bad.write_text("these are meeting notes, not audio\n")
    p = vibeinsight(cli_home, "process", str(bad), "--json")
    assert p.returncode == 2
    errors = [line for line in p.stderr.splitlines() if line.strip()]
    assert errors == [errors[0]] and errors[0].startswith("error: not_audio: ")
    doc = json.loads(p.stdout)
    assert doc["status"] == "FAILED" and doc["error"]["code"] == "not_audio"
    assert bad.read_text() == "these are meeting notes, not audio\n"
    row = json.loads(vibeinsight(cli_home, "status", doc["session_id"], "--json").stdout)
    assert (row["status"], row["error_code"]) == ("FAILED", "not_audio")


def test_human_output_and_unknown_session(cli_home):
    p = vibeinsight(cli_home, "process", str(SAMPLE), "--language", "en")
    assert p.returncode == 0, p.stderr
    assert "COMPLETED" in p.stdout and "Friday" in p.stdout
    assert "Traceback" not in p.stderr
    missing = vibeinsight(cli_home, "status", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "no status" in missing.stderr


def test_bad_arguments_are_rejected(cli_home):
    p = vibeinsight(cli_home, "process", str(SAMPLE), "--user-id", "bob", "--json")
    assert p.returncode == 2 and json.loads(p.stdout)["error"]["code"] == "invalid_argument"


def test_schema_command_publishes_json_schema(cli_home):
    p = vibeinsight(cli_home, "schema")
    schema = json.loads(p.stdout)
    assert schema["title"] == "VibeInsight result document"
    assert {"session_id", "status", "source", "transcode", "transcript", "analysis", "usage", "timings",
            "error", "schema_version"} <= set(schema["properties"])
