"""Per-head planners: choose a sparse pattern for every (layer, KV head) under a KV budget.

``make_plan(method, model, tokenizer, budget=0.35, length=8192)`` returns a
:class:`headlab.patterns.headplan.HeadPlan`. Methods (``PLANNERS``, names in ``METHODS``):

* ``uniform`` — every KV head sink_window(64, w), w the largest window within the budget (the
  StreamingLLM control, arXiv 2309.17453); ``plans.uniform``.
* ``random`` — a seeded random choice of k KV heads kept full, the rest sink_window(64, w), with
  (k, w) from :func:`headlab.sparsify.plans.budget.split_budget` (the control for head choice);
  ``plans.random``.
* ``retrieval`` — KV heads ranked by the retrieval score of their query heads (Wu et al., arXiv
  2404.15574; headlab's needle protocol on CPython's pydoc prose, never the RULER essays the
  evaluation uses); the top k stay full. Scores are cached on disk, so a second budget is free;
  ``plans.retrieval``.
* ``moa`` / ``duo`` — the MoA profiler (arXiv 2406.14909) and the DuoAttention gate trainer
  (arXiv 2410.10819), in ``headlab.sparsify.plans.moa`` / ``plans.duo`` (imported when first used).

The profiling methods (``CALIBRATED``: duo, moa, retrieval) take ``calib=``, the user's own text (a
path to a UTF-8 text or .jsonl file, or a :class:`headlab.data.calib.CalibText`), which replaces the
built-in pydoc prose in their calibration items; the plan records its file, sha256 and token count,
and the profile caches key on its sha256. uniform and random use no calibration data and refuse it.

Each planner module holds one request dataclass (its settings, checked when made) and a function
with the signature of ``make_plan`` minus ``method``; ``progress(done, total, what)`` is called as
work advances. Plans record method, budget, achieved kv_fraction and density, calibration, seed,
seconds and the headlab version, and are deterministic for a seed.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

from ...patterns.headplan import HeadPlan
from .budget import FULL, check_budget, kv_fraction_of, min_budget, split_budget, streaming
from .common import PlanRequest, SplitRequest, check_length, weights_digest
from .random import RandomRequest, plan_random
from .retrieval import RetrievalRequest, plan_retrieval, retrieval_head_scores
from .uniform import UniformRequest, plan_uniform

__all__ = [
    "PLANNERS",
    "METHODS",
    "CALIBRATED",
    "make_plan",
    "split_budget",
    "check_budget",
    "min_budget",
    "kv_fraction_of",
    "streaming",
    "FULL",
    "PlanRequest",
    "SplitRequest",
    "UniformRequest",
    "RandomRequest",
    "RetrievalRequest",
    "plan_uniform",
    "plan_random",
    "plan_retrieval",
    "retrieval_head_scores",
    "check_length",
    "weights_digest",
]


def _external(method: str) -> Callable[..., HeadPlan]:
    """The planner of ``method`` from ``plans/<method>/planner.py``, imported on first use."""
    module = f"{__name__}.{method}.planner"

    def run(model, tokenizer, **kw) -> HeadPlan:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            raise RuntimeError(
                f"method {method!r} needs {module}, which this headlab installation lacks; "
                f"use one of {[m for m in PLANNERS if m not in ('moa', 'duo')]}"
            ) from None
        return mod.make_plan(model, tokenizer, **kw)

    run.__name__ = f"plan_{method}"
    return run


PLANNERS: dict[str, Callable[..., HeadPlan]] = {
    "duo": _external("duo"),
    "moa": _external("moa"),
    "retrieval": plan_retrieval,
    "uniform": plan_uniform,
    "random": plan_random,
}
METHODS = tuple(PLANNERS)
#: the methods that profile the model on calibration text (and so take ``calib``)
CALIBRATED = ("duo", "moa", "retrieval")


def check_calib_method(method: str, calib) -> None:
    """ValueError when ``calib`` is given to a method that uses no calibration data."""
    if calib is not None and method not in CALIBRATED:
        raise ValueError(
            f"method {method!r} uses no calibration data, so a calibration text would be ignored: drop it "
            f"(only {', '.join(CALIBRATED)} profile the model)"
        )


def make_plan(
    method: str, model, tokenizer, *, budget: float, length: int, seed: int = 0, progress=None, cache_dir=None, **opts
) -> HeadPlan:
    """Profile ``model`` and return a per-head plan with kv_fraction <= ``budget`` at ``length`` tokens.

    opts: the fields of the method's request dataclass, the one home of their defaults (:class:`SplitRequest`:
    sink, min_window, full_share, the share of the budget spent on full heads; model_name, recorded in the
    plan; :class:`RetrievalRequest`: reduce, lengths, depths, needles, max_new, calib; moa's and duo's requests).
    ``calib`` (duo, moa, retrieval only): the user's calibration text, a path or a
    :class:`headlab.data.calib.CalibText`.
    """
    if method not in PLANNERS:
        raise ValueError(f"unknown plan method {method!r}; choose one of {list(PLANNERS)}")
    check_calib_method(method, opts.get("calib"))
    budget = check_budget(budget)
    length = check_length(model, length)
    model_name = opts.pop("model_name", None)
    t0 = time.time()
    plan = PLANNERS[method](
        model, tokenizer, budget=budget, length=length, seed=seed, progress=progress, cache_dir=cache_dir, **opts
    )
    if not isinstance(plan, HeadPlan):
        raise TypeError(f"planner {method!r} returned {type(plan).__name__}, not a HeadPlan")
    meta = plan.meta
    fill: dict[str, object] = {
        k: v
        for k, v in (("method", method), ("budget", budget), ("seed", seed), ("seconds", round(time.time() - t0, 2)))
        if meta.get(k) is None
    }
    if model_name:
        fill["model"] = {**meta["model"], "name": model_name}
    return plan.with_meta(**fill) if fill else plan
