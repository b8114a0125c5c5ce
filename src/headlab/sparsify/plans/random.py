"""``random`` planner: a seeded random choice of k KV heads kept full, the rest sink_window(sink, w)
(StreamingLLM, arXiv 2309.17453), with (k, w) from ``budget.split_budget``: the control for head
choice, at the same split as the profiled retrieval (arXiv 2404.15574) and duo (arXiv 2410.10819) plans.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ...patterns.headplan import HeadPlan
from .budget import split_budget
from .common import Progress, SplitRequest, check_length, model_shape, split_plan, tick


@dataclass(frozen=True)
class RandomRequest(SplitRequest):
    """Settings of a random plan: the split of ``SplitRequest``; ``seed`` picks the full heads."""


def plan(model, tokenizer, request: RandomRequest, *, progress: Progress | None = None, cache_dir=None) -> HeadPlan:
    """A seeded random set of k full KV heads; the rest sink_window(sink, w); (k, w) from split_budget."""
    check_length(model, request.length)
    t0 = time.time()
    L, _, Hkv = model_shape(model)
    k, w = split_budget(
        L * Hkv,
        request.budget,
        request.length,
        full_share=request.full_share,
        sink=request.sink,
        min_window=request.min_window,
    )
    picks = random.Random(request.seed).sample(range(L * Hkv), k)
    full = {(i // Hkv, i % Hkv) for i in picks}
    tick(progress, 1, 1, "random")
    return split_plan(model, full, w, request, method="random", full_share=request.full_share, calibration=None, t0=t0)


def plan_random(
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
    full_share: float = 0.6,
    model_name: str | None = None,
) -> HeadPlan:
    """A seeded random set of k full KV heads; the rest sink_window(sink, w); (k, w) from split_budget."""
    request = RandomRequest(
        budget=budget, length=length, seed=seed, sink=sink, min_window=min_window, full_share=full_share, model_name=model_name
    )
    return plan(model, tokenizer, request, progress=progress, cache_dir=cache_dir)
