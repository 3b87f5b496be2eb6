"""The embedded Prefect server the CLI starts (vibeinsight.cli.embedded_server): never left behind."""

import os
import signal
import subprocess
import sys

import pytest

from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_server_dies_with_a_killed_parent(tmp_path):
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from vibeinsight.cli.embedded_server import EmbeddedServer, configure_prefect_env\n"
        "configure_prefect_env(Path(sys.argv[1]))\n"
        "s = EmbeddedServer(Path(sys.argv[1]) / 'server.log')\n"
        "print(s.process.pid, flush=True)\n"
        "time.sleep(600)\n"  # the parent just lives until the test kills it
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    server_pid = int(parent.stdout.readline())
    assert _alive(server_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    try:
        wait_for(lambda: not _alive(server_pid), 10, 0.1, "the embedded server to exit after its parent")
    except AssertionError:
        os.kill(server_pid, signal.SIGKILL)
        pytest.fail("the embedded server outlived the process that started it")
