"""The engine counts the cores it may use: the CPU affinity, capped by a cgroup's CPU quota (what a Fly
Machine or a container shows), not the host's os.cpu_count()."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vibeinsight import cores

pytestmark = pytest.mark.unit


@pytest.fixture
def no_cgroup(tmp_path):
    return tmp_path / "no-cgroup"  # neither v2 nor v1 files: no quota


def test_the_affinity_counts_not_the_host(monkeypatch, no_cgroup):
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {3})
    assert cores.usable_cores(no_cgroup) == 1
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 5})
    assert cores.usable_cores(no_cgroup) == 2


def test_without_affinity_the_host_count(monkeypatch, no_cgroup):
    monkeypatch.delattr(cores.os, "sched_getaffinity")  # macOS has none
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 6)
    assert cores.usable_cores(no_cgroup) == 6
    monkeypatch.setattr(cores.os, "cpu_count", lambda: None)
    assert cores.usable_cores(no_cgroup) == 1


@pytest.mark.parametrize(("cpu_max", "affinity", "want"), [
    ("max 100000\n", 8, 8),  # no quota
    ("100000 100000\n", 8, 1),  # one core's worth
    ("150000 100000\n", 8, 2),  # a part of a core still gets a thread
    ("400000 100000\n", 2, 2),  # a quota above the pinned cores: the affinity wins
    ("50000 100000\n", 8, 1),  # half a core: at least one
    ("garbage\n", 4, 4),  # unreadable: ignored
])
def test_a_cgroup_v2_quota_caps_the_count(monkeypatch, tmp_path, cpu_max, affinity, want):
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: set(range(affinity)))
    assert cores.usable_cores(tmp_path) == want


def test_a_cgroup_v1_quota_caps_the_count(monkeypatch, tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert cores.usable_cores(tmp_path) == 2
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "unlimited"
    assert cores.usable_cores(tmp_path) == 8


def test_a_process_pinned_to_one_core_counts_one():
    """The real call, no monkeypatch: a child pinned as the Fly stand-in pins a 1-cpu Machine."""
    code = "from vibeinsight.cores import usable_cores; print(usable_cores())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert out.stdout.strip() == "1"
