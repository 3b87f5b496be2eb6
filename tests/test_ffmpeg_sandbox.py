"""ffmpeg and ffprobe run with nothing to steal (vibeinsight/audio/ffmpeg.py).

An `ffmpeg` and an `ffprobe` first on PATH record what a decoder taken over by a hostile upload
would see: its environment, whether its parent's /proc/<ppid>/environ can be read, its resource
limits and its stdin. The process that starts them holds the run's secrets (fake ones) in its
environment, as a run Machine does.

The image runs its processes as an unprivileged user (Dockerfile: USER 10001), so here too the
process that starts the tools runs as one (nobody) when the tests run as root: root reads any
process's environ whatever its dumpable flag. It is the system's Python of the same version with
this checkout and the virtualenv's packages on its path (the virtualenv's own interpreter lives
under root's private home).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from vibeinsight.cores import usable_cores

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "FLY_S3_ACCESS_KEY_ID": "AKIA-sandbox-test-key-id",
    "FLY_S3_SECRET_ACCESS_KEY": "s3-secret-sandbox-5f2e9c",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-sandbox-77aa01",
    "OPENAI_API_KEY": "sk-sandbox-openai-91b3d2",
    "GEMINI_API_KEY": "gemini-sandbox-c0ffee",
    "SUPABASE_SERVICE_ROLE_KEY": "eyJ-sandbox-service-role-4d4d",
    "SUPABASE_ANON_KEY": "eyJ-sandbox-anon-8e8e",
    "PREFECT_API_KEY": "pnu_sandbox_prefect_1a2b",
}
NOBODY = 65534

SPY = textwrap.dedent('''\
    #!{python} -I
    """Records what this process can see, then behaves like a tool that printed nothing."""
    import json, os, resource, sys
    try:
        with open(f"/proc/{{os.getppid()}}/environ", "rb") as f:
            parent = f.read().decode(errors="replace")
    except OSError as exc:
        parent = None
    limits = {{name: resource.getrlimit(getattr(resource, name))[0]
              for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE")}}
    stdin = os.readlink("/proc/self/fd/0")
    record = dict(tool=os.path.basename(sys.argv[0]), env=dict(os.environ), parent_environ=parent,
                  limits=limits, stdin=stdin)
    with open(os.path.join({out!r}, f"seen-{{os.getpid()}}.json"), "w") as f:
        json.dump(record, f)
    ''')

# What the run's process does: ffprobe through run(), ffmpeg through popen() (the transcode's way).
RUNNER = textwrap.dedent('''\
    import subprocess
    from vibeinsight.audio import ffmpeg
    ffmpeg.run(["ffprobe", "-v", "error", "upload"], 30, "ffprobe")
    with ffmpeg.popen(["ffmpeg", "-i", "upload"], 30, "the transcode", stderr=subprocess.DEVNULL) as proc:
        proc.stdout.read()
    ''')


@pytest.fixture
def runner(tmp_path):
    """(python, Popen options, folder): how the run's process is started, and a folder it can use."""
    if os.geteuid() != 0:
        yield sys.executable, {}, tmp_path
        return
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    python = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if python is None:
        pytest.fail(f"running as root, the test needs a system {version} that an unprivileged user can run")
    with tempfile.TemporaryDirectory(prefix="vi-sandbox-") as tmp:  # pytest's tmp_path is private to root
        Path(tmp).chmod(0o755)
        yield python, dict(user=NOBODY, group=NOBODY, extra_groups=[]), Path(tmp)


def _spies(python: str, folder: Path) -> tuple[Path, Path]:
    bin_dir, out = folder / "bin", folder / "seen"
    bin_dir.mkdir()
    out.mkdir()
    for tool in ("ffmpeg", "ffprobe"):
        path = bin_dir / tool
        path.write_text(SPY.format(python=python, out=str(out)))
        path.chmod(0o755)
    out.chmod(0o777)  # the tools, started by the unprivileged process, write here
    return bin_dir, out


def _run_as_the_run(runner, bin_dir: Path) -> subprocess.CompletedProcess:
    python, options, folder = runner
    packages = [p for p in sys.path if p.endswith("site-packages")]
    env = {**os.environ, **SECRETS, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "HOME": str(folder),
           "VIBEINSIGHT_HOME": str(folder / "home"), "PYTHONPATH": os.pathsep.join([str(ROOT), *packages])}
    return subprocess.run([python, "-c", RUNNER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                          **options)


def test_ffmpeg_and_ffprobe_see_no_secret_and_cannot_read_their_parent(runner):
    bin_dir, out = _spies(runner[0], runner[2])
    done = _run_as_the_run(runner, bin_dir)
    assert done.returncode == 0, done.stderr
    seen = [json.loads(p.read_text()) for p in sorted(out.glob("seen-*.json"))]
    assert sorted(s["tool"] for s in seen) == ["ffmpeg", "ffprobe"]
    for s in seen:
        assert set(s["env"]) == {"PATH", "LANG", "LC_ALL"}, s["env"]
        assert s["env"]["PATH"].startswith(str(bin_dir))
        assert not any(secret in json.dumps(s["env"]) for secret in SECRETS.values())
        assert s["parent_environ"] is None, f"{s['tool']} read its parent's environment"
        assert s["stdin"] == "/dev/null"


def test_ffmpeg_runs_under_the_resource_limits(runner, monkeypatch):
    bin_dir, out = _spies(runner[0], runner[2])
    monkeypatch.setenv("VIBEINSIGHT_FFMPEG_MAX_MEMORY_MB", "1536")
    monkeypatch.setenv("VIBEINSIGHT_FFMPEG_MAX_FILE_MB", "700")
    monkeypatch.setenv("VIBEINSIGHT_FFMPEG_MAX_OPEN_FILES", "48")
    done = _run_as_the_run(runner, bin_dir)
    assert done.returncode == 0, done.stderr
    seen = [json.loads(p.read_text()) for p in out.glob("seen-*.json")]
    assert len(seen) == 2
    for s in seen:
        limits = s["limits"]
        assert limits["RLIMIT_AS"] == 1536 * 2**20
        assert limits["RLIMIT_FSIZE"] == 700 * 2**20
        assert limits["RLIMIT_NOFILE"] == 48
        # the wall timeout (30 s) on every core, plus one: a backstop behind the watchdog
        assert limits["RLIMIT_CPU"] == 30 * usable_cores() + 1
