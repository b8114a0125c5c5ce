"""Provenance that cannot lie: the tree a run started from, checked again when it ends, and — for timing
claims — whether anything else used the CPU meanwhile.

* :func:`tree_state` — HEAD and whether the tree differs from it: tracked changes *and* untracked files under
  ``src/``, ``repro/`` and ``scripts/`` (an untracked claims module or kernel changes what runs as much as an
  edit does); with the list of those files and the diff of tracked changes.
* :class:`CpuWatch` — the CPU time the whole machine spent busy (``/proc/stat``) against the CPU time of this
  process and its children (``resource.getrusage``) over the run: the difference is what other processes used.
  A timing claim whose run shared the CPU is judged ``invalid: machine busy``, not met or unmet.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass, field

from .record import repo_root

#: paths whose untracked files make a tree dirty (code that runs), besides every tracked change
WATCHED = ("src", "repro", "scripts")
#: a timing run is invalid when other processes used more than this share of one core on average
BUSY_SHARE = 0.10


def _git(*args: str) -> str | None:
    root = repo_root()
    if root is None:
        return None
    try:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def tree_state() -> dict:
    """``{"commit", "dirty", "changed": [paths], "diff"}`` of the checkout (commit None outside a git checkout)."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "dirty": False, "changed": [], "diff": ""}
    tracked = (_git("status", "--porcelain", "--untracked-files=no") or "").splitlines()
    untracked = (_git("status", "--porcelain", "--untracked-files=all", "--", *WATCHED) or "").splitlines()
    changed = sorted({line[3:] for line in tracked + untracked if line.strip() and not line[3:].startswith("results/")})
    diff = (_git("diff", "HEAD", "--", ".", ":(exclude)results") or "") if changed else ""
    return {"commit": head.strip(), "dirty": bool(changed), "changed": changed, "diff": diff}


def commit_label(state: dict) -> str | None:
    """``HASH`` or ``HASH+dirty`` (the form result.json has always used)."""
    if state.get("commit") is None:
        return None
    return state["commit"] + ("+dirty" if state["dirty"] else "")


def _machine_busy_ticks() -> tuple[float, float] | None:
    """(busy seconds, wall-clock seconds × cores) of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            first = f.readline().split()
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    vals = [int(x) for x in first[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return (sum(vals) - idle) / hz, sum(vals) / hz


def _own_cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@dataclass
class CpuWatch:
    """Start before a run, :meth:`stop` after it: how much CPU other processes used meanwhile."""

    start_wall: float = field(default_factory=time.time)
    start_machine: tuple[float, float] | None = field(default_factory=_machine_busy_ticks)
    start_own: float = field(default_factory=_own_cpu)
    load_before: list[float] | None = field(default_factory=lambda: list(os.getloadavg()) if hasattr(os, "getloadavg") else None)

    def stop(self) -> dict:
        wall = max(time.time() - self.start_wall, 1e-9)
        end = _machine_busy_ticks()
        own = _own_cpu() - self.start_own
        out = {
            "load_before": self.load_before,
            "load_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "own_cpu_s": round(own, 1),
            "wall_s": round(wall, 1),
        }
        if end is None or self.start_machine is None:
            out.update(other_cpu_s=None, other_share=None, busy=None)
            return out
        other = max(0.0, (end[0] - self.start_machine[0]) - own)
        share = other / wall  # cores' worth of CPU used by other processes, on average
        out.update(other_cpu_s=round(other, 1), other_share=round(share, 3), busy=share > BUSY_SHARE)
        return out
