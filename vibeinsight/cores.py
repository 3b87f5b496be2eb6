"""The cores this process may use: what the engine sizes its threads and chunks by.

os.cpu_count() is the host's count; a Fly Machine, a container or a process pinned with taskset gets
fewer. The CPU affinity says which cores the scheduler may put us on; a cgroup's CPU quota (cgroup
v2 `cpu.max`, v1 `cpu.cfs_quota_us`) says how many cores' worth of time we get. The smaller wins.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def affinity_cores() -> int:
    """Cores the scheduler may run this process on; the host's count where affinity is unknown."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def quota_cores(root: Path = CGROUP) -> float | None:
    """Cores' worth of CPU time the cgroup grants (quota / period), None when unlimited or unknown."""
    try:  # cgroup v2: "<quota|max> <period>"
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or 100000)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: quota -1 means unlimited
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores(root: Path = CGROUP) -> int:
    """Whole cores this process may keep busy: the affinity, capped by the cgroup's quota (1.5 cores
    of quota give 2 threads: a partial core still pays)."""
    cores = affinity_cores()
    quota = quota_cores(root)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))
