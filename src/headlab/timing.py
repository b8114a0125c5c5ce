"""The one timing protocol of headlab, and where a measurement ran.

Protocol (every benchmark that compares configurations uses it):

- ``warmup`` untimed calls of each configuration first (allocator, kernels, compiles, caches);
- then ``repeats`` rounds in which the configurations alternate, so that all see the same machine load:
  in the given order in even rounds and reversed in odd ones (:func:`order`; ``reverse=False`` keeps one
  order in every round);
- each call timed by wall clock and process CPU time (:func:`timed`);
- reported as the median with the range over the rounds (:func:`spread`), and ratios between
  configurations per round (:meth:`Timings.ratios`), so that a load change during a run moves both sides;
- the machine's load average recorded with the numbers (:func:`load_average`, :func:`load_text`).

``versions()`` and ``machine()`` go into every benchmark's output.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


# ------------------------------------------------------------------------------------------ the protocol
def timed(fn: Callable[[], T]) -> tuple[float, float, T]:
    """(wall seconds, process CPU seconds, the result) of one call of ``fn``."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def order(items: Sequence[T], round_: int, reverse: bool = True) -> Sequence[T]:
    """The configurations of round ``round_``: ``items`` in even rounds, reversed in odd ones (with ``reverse``)."""
    return items[::-1] if reverse and round_ % 2 else items


def spread(xs: Sequence[float]) -> dict[str, float]:
    """{"median", "min", "max"} of a non-empty list of samples."""
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


@dataclass
class Timings:
    """The samples of :func:`alternate`: per configuration its wall and CPU seconds, one per round."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]
    runs: list[tuple[int, str]] = field(default_factory=list)  # (round, configuration) in the order they ran
    last: dict[str, Any] = field(default_factory=dict)  # each configuration's result of its last timed call

    def median(self, name: str) -> float:
        return statistics.median(self.wall[name])

    def spread(self, name: str) -> dict[str, float]:
        return spread(self.wall[name])

    def range(self, name: str) -> tuple[float, float]:
        return min(self.wall[name]), max(self.wall[name])

    def ratios(self, a: str, b: str) -> list[float]:
        """Per round, wall seconds of ``a`` / wall seconds of ``b``."""
        return [x / y for x, y in zip(self.wall[a], self.wall[b])]

    def as_dict(self) -> dict[str, dict[str, list[float]]]:
        """{configuration: {"wall": [...], "cpu": [...]}}."""
        return {n: {"wall": self.wall[n], "cpu": self.cpu[n]} for n in self.wall}


def alternate(
    calls: Mapping[str, Callable[[], Any]],
    repeats: int,
    *,
    warmup: int = 1,
    reverse: bool = True,
    on_sample: Callable[[int, str, float, float], None] | None = None,
) -> Timings:
    """Time ``calls`` ({configuration: call}) by the protocol: ``warmup`` untimed calls of each, then ``repeats``
    rounds in :func:`order`. ``on_sample(round, configuration, wall, cpu)`` after each timed call."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    res = Timings({n: [] for n in names}, {n: [] for n in names})
    for r in range(repeats):
        for name in order(names, r, reverse):
            wall, cpu, res.last[name] = timed(calls[name])
            res.wall[name].append(wall)
            res.cpu[name].append(cpu)
            res.runs.append((r, name))
            if on_sample is not None:
                on_sample(r, name, wall, cpu)
    return res


# ------------------------------------------------------------------------------------------ where it ran
def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def load_text() -> str:
    """The load averages as benchmark tables print them, "1.2 / 0.9 / 0.7" ("?" where the platform has none)."""
    load = load_average()
    return " / ".join(f"{x:.1f}" for x in load) if load is not None else "?"


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
