"""``backend="auto"`` for static patterns at long context: measure gather vs FlexAttention once.

FlexAttention wins on CPU for some layouts (e.g. a causal window of 256 at 8K) and loses on others
(e.g. PowerAttention's scattered blocks), and its first call compiles for seconds to a minute. So
``auto`` does what the benchmark does, once per (pattern, sizes, dtype): for T ≥ ``FLEX_MIN_T`` it
runs both backends on the real inputs (FlexAttention twice, so its compile is not counted), keeps
the faster one for every later call with the same key, and falls back to gather when compiling
fails. Shorter inputs always use gather (a compile would cost more than the whole call).
FlexAttention compiles once per exact shape, so at most ``MAX_MEASURED`` keys are measured per process
(a workload of many different lengths would otherwise pay a compile per length and hit torch.compile's
recompile limit, past which it runs FlexAttention unfused); later new keys use gather.
``HEADLAB_FLEX=0`` turns the measurement off (gather only).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

FLEX_MIN_T = 4096
MAX_MEASURED = 4
#: (pattern.describe(), T, S, H, Hkv, dtype, causal) -> "flex" | "gather", with the measured seconds
DECISIONS: dict[tuple, tuple[str, float, float]] = {}


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def choose(key: tuple, T: int, run_gather: Callable[[], torch.Tensor], run_flex: Callable[[], torch.Tensor]) -> tuple[str, torch.Tensor | None]:
    """(backend, output if this call already computed it)."""
    if T < FLEX_MIN_T or os.environ.get("HEADLAB_FLEX", "1") == "0":
        return "gather", None
    if key in DECISIONS:
        return DECISIONS[key][0], None
    if len(DECISIONS) >= MAX_MEASURED:
        return "gather", None
    out, t_gather = _timed(run_gather)
    try:
        run_flex()  # compile + block mask
        _, t_flex = _timed(run_flex)
    except Exception:  # noqa: BLE001 - no compiler / unsupported: gather is always correct
        DECISIONS[key] = ("gather", t_gather, float("inf"))
        return "gather", out
    DECISIONS[key] = ("flex" if t_flex < t_gather else "gather", t_gather, t_flex)
    return DECISIONS[key][0], out
