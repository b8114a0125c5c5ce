"""``uniform`` planner: every KV head sink_window(sink, w), w the largest window within the budget;
the head-blind StreamingLLM control (Xiao et al., arXiv 2309.17453) that the profiled plans
(MoA, arXiv 2406.14909; DuoAttention, arXiv 2410.10819) must beat at the same KV budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ...patterns.headplan import HeadPlan
from .budget import split_budget
from .common import Progress, SplitRequest, check_length, model_shape, split_plan, tick


@dataclass(frozen=True)
class UniformRequest(SplitRequest):
    """Settings of a uniform plan; ``full_share`` is accepted for a common call signature and ignored
    (no head is full)."""

    full_share: float = 0.0


def plan(model, tokenizer, request: UniformRequest, *, progress: Progress | None = None, cache_dir=None) -> HeadPlan:
    """Every KV head sink_window(sink, w), w the largest window with kv_fraction <= budget."""
    check_length(model, request.length)
    t0 = time.time()
    L, _, Hkv = model_shape(model)
    _, w = split_budget(L * Hkv, request.budget, request.length, full_share=0.0, sink=request.sink, min_window=request.min_window)
    tick(progress, 1, 1, "uniform")
    return split_plan(model, set(), w, request, method="uniform", full_share=0.0, calibration=None, t0=t0)


def plan_uniform(
    model,
    tokenizer,
    *,
    budget,
    length,
    seed=0,
    progress=None,
    cache_dir=None,
    sink: int = 64,
    min_window: int = 64,
    full_share: float = 0.0,
    model_name: str | None = None,
) -> HeadPlan:
    """Every KV head sink_window(sink, w), w the largest window with kv_fraction <= budget
    (``full_share`` is accepted for a common call signature and ignored: no head is full)."""
    request = UniformRequest(
        budget=budget, length=length, seed=seed, sink=sink, min_window=min_window, full_share=full_share, model_name=model_name
    )
    return plan(model, tokenizer, request, progress=progress, cache_dir=cache_dir)
