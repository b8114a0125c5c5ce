"""``random`` planner: a seeded random choice of k KV heads kept full, the rest sink_window(sink, w)
(StreamingLLM, arXiv 2309.17453), with (k, w) from ``budget.split_budget``: the control for head
choice, at the same split as the profiled retrieval (arXiv 2404.15574) and duo (arXiv 2410.10819) plans.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ...patterns.headplan import HeadPlan
from .common import Progress, SplitRequest, keyword_planner, model_shape, split_plan, tick


@dataclass(frozen=True)
class RandomRequest(SplitRequest):
    """Settings of a random plan: the split of ``SplitRequest``; ``seed`` picks the full heads."""


def plan(model, tokenizer, request: RandomRequest, *, progress: Progress | None = None, cache_dir=None) -> HeadPlan:
    """A seeded random set of k full KV heads; the rest sink_window(sink, w); (k, w) from split_budget."""
    t0 = time.time()
    k, w = request.split(model)
    L, _, Hkv = model_shape(model)
    picks = random.Random(request.seed).sample(range(L * Hkv), k)
    full = {(i // Hkv, i % Hkv) for i in picks}
    tick(progress, 1, 1, "random")
    return split_plan(model, full, w, request, method="random", full_share=request.full_share, calibration=None, t0=t0)


plan_random = keyword_planner(
    plan,
    RandomRequest,
    "plan_random",
    """A seeded random set of k full KV heads; the rest sink_window(sink, w); (k, w) from split_budget; keywords:
    the fields of :class:`RandomRequest`.""",
)
