"""No traceback reaches a user: each failure the issue found is one line `error: CODE: message` on
stderr with exit 2 (bad input or settings) or 1, from the real command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SESSION = str(uuid.uuid4())


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "VIBEINSIGHT_", "FLY_", "AWS_", "SUPABASE_"))}
    base.update(VIBEINSIGHT_HOME=str(tmp_path / "home"), **env)
    return subprocess.run([sys.executable, "-m", "vibeinsight", *args], capture_output=True, text=True, env=base,
                          timeout=120)


def one_error_line(p: subprocess.CompletedProcess, code: str, exit_code: int) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), p.stderr
    assert p.returncode == exit_code, (p.returncode, p.stderr)
    return lines[0]


def test_status_with_postgresql_down(tmp_path):
    # nothing listens on port 1: the connection is refused at once
    p = cli(tmp_path, "status", SESSION, VIBEINSIGHT_STATUS_URL="postgresql://postgres@127.0.0.1:1/postgres")
    one_error_line(p, "unavailable", 1)


def test_status_of_an_id_that_is_not_a_uuid(tmp_path):
    one_error_line(cli(tmp_path, "status", "../../etc/passwd"), "invalid_argument", 2)


def test_upload_url_without_credentials(tmp_path):
    p = cli(tmp_path, "upload-url", f"uploads/{SESSION}/a.m4a", "--content-type", "audio/mp4",
            FLY_S3_ENDPOINT="http://127.0.0.1:1", FLY_S3_BUCKET_NAME="b",
            AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
            AWS_EC2_METADATA_DISABLED="true")
    line = one_error_line(p, "no_credentials", 2)
    assert "FLY_S3_ACCESS_KEY_ID" in line


def test_quota_report_with_a_missing_plans_file(tmp_path):
    p = cli(tmp_path, "quota", "report", VIBEINSIGHT_QUOTA_PLANS_FILE=str(tmp_path / "missing.json"))
    assert "missing.json" in one_error_line(p, "invalid_setting", 2)


@pytest.mark.parametrize(("name", "value"), [("VIBEINSIGHT_MAX_BYTES", "lots"), ("VIBEINSIGHT_STORAGE", "ftp"),
                                             ("VIBEINSIGHT_STATUS_MIN_INTERVAL_S", "soon")])
def test_a_malformed_setting(tmp_path, name, value):
    line = one_error_line(cli(tmp_path, "status", SESSION, **{name: value}), "invalid_setting", 2)
    assert name in line


def test_an_unknown_status_url_scheme_fails_instead_of_falling_back(tmp_path):
    p = cli(tmp_path, "status", SESSION, VIBEINSIGHT_STATUS_URL="mysql://db/status")
    assert "VIBEINSIGHT_STATUS_URL" in one_error_line(p, "invalid_setting", 2)
    assert not (tmp_path / "home" / "status.db").exists()  # no silent SQLite
