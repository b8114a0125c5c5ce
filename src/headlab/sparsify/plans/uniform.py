"""``uniform`` planner: every KV head sink_window(sink, w), w the largest window within the budget;
the head-blind StreamingLLM control (Xiao et al., arXiv 2309.17453) that the profiled plans
(MoA, arXiv 2406.14909; DuoAttention, arXiv 2410.10819) must beat at the same KV budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ...patterns.headplan import HeadPlan
from .common import Progress, SplitRequest, keyword_planner, split_plan, tick


@dataclass(frozen=True)
class UniformRequest(SplitRequest):
    """Settings of a uniform plan; ``full_share`` is accepted for a common call signature and ignored
    (no head is full)."""

    full_share: float = 0.0


def plan(model, tokenizer, request: UniformRequest, *, progress: Progress | None = None, cache_dir=None) -> HeadPlan:
    """Every KV head sink_window(sink, w), w the largest window with kv_fraction <= budget."""
    t0 = time.time()
    _, w = request.split(model, full_share=0.0)
    tick(progress, 1, 1, "uniform")
    return split_plan(model, set(), w, request, method="uniform", full_share=0.0, calibration=None, t0=t0)


plan_uniform = keyword_planner(
    plan,
    UniformRequest,
    "plan_uniform",
    """Every KV head sink_window(sink, w), w the largest window with kv_fraction <= budget; keywords: the fields
    of :class:`UniformRequest` (``full_share`` is accepted for a common call signature and ignored).""",
)
