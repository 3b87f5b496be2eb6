"""The embedded Prefect server the CLI starts: ready, and never left behind."""

import os
import signal
import subprocess
import sys
import time

import pytest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_server_dies_with_a_killed_parent(tmp_path):
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from flows.runtime import EmbeddedServer, configure_prefect_env\n"
        "configure_prefect_env(Path(sys.argv[1]))\n"
        "s = EmbeddedServer(Path(sys.argv[1]) / 'server.log')\n"
        "print(s.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    server_pid = int(parent.stdout.readline())
    assert _alive(server_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        if not _alive(server_pid):
            break
        time.sleep(0.1)
    else:
        os.kill(server_pid, signal.SIGKILL)
        pytest.fail("the embedded server outlived the process that started it")
