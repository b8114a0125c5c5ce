"""``backend="auto"`` for static patterns at long context: time the candidate backends, fairly, once.

FlexAttention wins on CPU for some layouts and loses on others, and its first call compiles for
seconds to a minute, so a single cold sample decides nothing. For T >= ``FLEX_MIN_T`` the first
call with a new key (pattern, sizes, dtype) runs every candidate once untimed (FlexAttention's
compile, the block plan, caches), then ``SAMPLES`` rounds in which the candidates alternate, and
keeps the one with the lowest median for every later call with that key. A candidate that raises
(no compiler, unsupported shape) is dropped; the first candidate is the default and is never
dropped. Shorter inputs always use the default (a compile would cost more than the whole call).
FlexAttention compiles once per exact shape, so at most ``MAX_MEASURED`` keys are measured per
process (a workload of many lengths would otherwise pay a compile per length and hit
torch.compile's recompile limit); later new keys use the default.
``HEADLAB_FLEX=0`` turns the measurement off (default only).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..timing import alternate

FLEX_MIN_T = 4096
MAX_MEASURED = 4
SAMPLES = 3


@dataclass
class Decision:
    """The measured choice for one key: the winner, and every candidate's timed samples (seconds)."""

    backend: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def median(self, name: str) -> float:
        s = self.samples.get(name)
        return statistics.median(s) if s else float("inf")


#: (pattern.describe(), T, S, H, Hkv, dtype, causal) -> Decision
DECISIONS: dict[tuple, Decision] = {}


def measuring(T: int) -> bool:
    """Whether a call of T queries may be measured at all."""
    return T >= FLEX_MIN_T and os.environ.get("HEADLAB_FLEX", "1") != "0"


def choose(key: tuple, T: int, candidates: dict[str, Callable[[], torch.Tensor]]) -> tuple[str, torch.Tensor | None]:
    """(backend to use, its output if this call already computed it). ``candidates``: name -> call,
    the default first."""
    names = list(candidates)
    default = names[0]
    if len(names) == 1 or not measuring(T):
        return default, None
    if key in DECISIONS:
        return DECISIONS[key].backend, None
    if len(DECISIONS) >= MAX_MEASURED:
        return default, None
    dec = Decision(default)
    live = []
    for name in names:  # untimed warm-up: compile, plans, allocator
        try:
            candidates[name]()
            live.append(name)
        except Exception as exc:  # noqa: BLE001 - no compiler / unsupported: the default is always correct
            if name == default:
                raise
            dec.failed[name] = f"{type(exc).__name__}: {exc}"
    t = alternate({name: candidates[name] for name in live}, SAMPLES, warmup=0, reverse=False)  # warmed up above
    dec.samples = t.wall
    dec.backend = min(live, key=dec.median)
    DECISIONS[key] = dec
    return dec.backend, t.last[dec.backend]
