"""The Supabase Edge Function (infra/supabase/functions/process-audio) under Deno's own test runner."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def test_edge_function_deno_tests():
    deno = shutil.which("deno")
    if deno is None:
        pytest.fail("deno not installed (bin/bootstrap test installs it: npm install -g deno)")
    out = subprocess.run([deno, "test", "--allow-net", "--no-prompt", "infra/supabase/functions/process-audio/"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env={
                             "PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "NO_COLOR": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"ok \| (\d+) passed \| 0 failed", out.stdout)
    assert m and int(m.group(1)) >= 4, out.stdout
