"""How many CPUs this process may use: the container's CPU quota, not the node's core count.

In a pod with `resources.limits.cpu: 2` on a 64-core node, os.cpu_count() says 64 and
multiprocessing's default would start 64 Beam workers that the CFS quota then throttles to
2 CPUs' worth of time. available() reads the quota the kernel enforces:

- cgroup v2: `cpu.max` ("QUOTA PERIOD" in microseconds, or "max PERIOD": no limit) of this
  process's cgroup (from /proc/self/cgroup) and of every cgroup above it up to `<root>`:
  the smallest quota holds (a pod's limit can sit a level above its container's);
- cgroup v1: `<root>/cpu/cpu.cfs_quota_us` (-1: no limit) and `cpu.cfs_period_us`
  (also looked for under `cpu,cpuacct/`, where some hosts mount it);

and returns ceil(quota / period), bounded by the CPUs this process may be scheduled on
(its affinity mask: `taskset`, Kubernetes' static CPU manager), and at least 1.

>>> import pathlib, tempfile
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "cpu.max").write_text("150000 100000\\n")
>>> available(root, cores=64, proc_cgroup=root / "none")
2
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def quota(root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_CGROUP) -> float | None:
    """The CPU quota in CPUs (1.5 for "150000 100000"), or None where none is set or readable."""
    root = Path(root)
    found = [q for folder in _v2_folders(root, proc_cgroup)
             if (q := _v2_quota(folder)) is not None]
    if found:
        return min(found)
    if (root / "cpu.max").exists():
        return None                     # cgroup v2 without a limit
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        q, p = _read(root / folder / "cpu.cfs_quota_us"), _read(root / folder / "cpu.cfs_period_us")
        if q is not None and p is not None:
            return None if q.strip() == "-1" else _ratio(q, p)
    return None


def available(root: str | Path = CGROUP_ROOT, cores: int | None = None,
              proc_cgroup: str | Path = PROC_CGROUP) -> int:
    """CPUs this process may use: min(cores it may run on, ceil(cgroup quota)), at least 1.

    cores: the CPUs to bound by (default: this process's affinity mask, else os.cpu_count()).
    root, proc_cgroup: where the cgroup files are (tests point them at fakes).
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    limit = quota(root, proc_cgroup)
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def _v2_folders(root: Path, proc_cgroup) -> list[Path]:
    """This process's v2 cgroup folder and those above it, up to root."""
    own = ""
    for line in (_read(Path(proc_cgroup)) or "").splitlines():
        if line.startswith("0::"):
            own = line[3:].strip().strip("/")
    parts = [p for p in own.split("/") if p and p != ".."]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_quota(folder: Path) -> float | None:
    fields = (_read(folder / "cpu.max") or "").split()
    return _ratio(fields[0], fields[1]) if len(fields) == 2 and fields[0] != "max" else None


def _ratio(q: str, p: str) -> float | None:
    try:
        q_us, p_us = int(q), int(p)
    except ValueError:
        return None
    return q_us / p_us if q_us > 0 and p_us > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
