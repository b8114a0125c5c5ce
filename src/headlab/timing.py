"""Where a measurement ran: library versions, the machine and its load, for every timing headlab records.

``versions()`` and ``machine()`` go into every benchmark's output; ``load_average()`` is read before a timing
run so that a reader can tell an idle machine from a busy one.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "headlab", "numpy", "scipy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        threads = None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": threads, "system": platform.system()}
