"""Per-head planners: choose a sparse pattern for every (layer, KV head) under a KV budget.

``make_plan(method, model, tokenizer, budget=0.35, length=8192)`` returns a
:class:`headlab.patterns.headplan.HeadPlan`. Methods:

* ``uniform`` — every KV head sink_window(64, w), w the largest window within the budget (the
  StreamingLLM control, arXiv 2309.17453).
* ``random`` — a seeded random choice of k KV heads kept full, the rest sink_window(64, w), with
  (k, w) from :func:`headlab.sparsify.budget.split_budget` (the control for head choice).
* ``retrieval`` — KV heads ranked by the retrieval score of their query heads (Wu et al., arXiv
  2404.15574; headlab's needle protocol on CPython's pydoc prose, never the RULER essays the
  evaluation uses); the top k stay full. Scores are cached on disk, so a second budget is free.
* ``moa`` / ``duo`` — the MoA profiler (arXiv 2406.14909) and the DuoAttention gate trainer
  (arXiv 2410.10819), in ``headlab.sparsify.profile_moa`` / ``profile_duo``.

Every planner has the signature of ``make_plan`` minus ``method``; ``progress(done, total, what)``
is called as work advances. Plans record method, budget, achieved kv_fraction and density,
calibration, seed, seconds and the headlab version, and are deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..patterns.headplan import HeadPlan, model_fingerprint, model_info, plan_from_entries
from .budget import FULL, check_budget, kv_fraction_of, min_budget, split_budget, streaming

__all__ = [
    "PLANNERS",
    "METHODS",
    "make_plan",
    "split_budget",
    "check_budget",
    "min_budget",
    "kv_fraction_of",
    "streaming",
    "FULL",
    "plan_uniform",
    "plan_random",
    "plan_retrieval",
    "retrieval_head_scores",
    "check_length",
    "weights_digest",
]

Progress = Callable[[int, int, str], None]

#: retrieval calibration defaults: needle cases in pydoc prose (lengths x depths x needles)
RETRIEVAL_LENGTHS = (500, 1000, 2000)
RETRIEVAL_DEPTHS = (0.25, 0.5, 0.75)
RETRIEVAL_NEEDLES = (0, 1, 2)


def check_length(model, length) -> int:
    """``length`` as an int in 1..model context; ValueError naming the value and the range."""
    maxpos = model_info(model)["max_positions"]
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")
    if maxpos is not None and length > maxpos:
        raise ValueError(f"length {length} is beyond the model's context: valid lengths are 1..{maxpos}")
    return length


def _shape(model) -> tuple[int, int, int]:
    info = model_info(model)
    return info["n_layers"], info["n_heads"], info["n_kv_heads"]


def _tick(progress: Progress | None, done: int, total: int, what: str) -> None:
    if progress is not None:
        progress(done, total, what)


def _split_plan(
    model,
    full: set[tuple[int, int]],
    window: int,
    *,
    method: str,
    budget: float,
    length: int,
    seed: int,
    sink: int,
    full_share: float,
    min_window: int,
    calibration,
    scores=None,
    model_name: str | None = None,
    t0: float,
) -> HeadPlan:
    """A plan whose KV heads in ``full`` are causal and the rest sink_window(sink, window)."""
    L, _, Hkv = _shape(model)
    entries = [[FULL if (li, h) in full else streaming(sink, window) for h in range(Hkv)] for li in range(L)]
    return plan_from_entries(
        entries,
        model,
        length=length,
        method=method,
        budget=budget,
        seed=seed,
        calibration=calibration,
        scores=scores,
        model_name=model_name,
        options={"sink": sink, "window": window, "full_share": full_share, "min_window": min_window, "full_heads": len(full)},
        seconds=round(time.time() - t0, 2),
    )


# ---------------------------------------------------------------------------------------------- controls
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
    t0 = time.time()
    L, _, Hkv = _shape(model)
    _, w = split_budget(L * Hkv, budget, length, full_share=0.0, sink=sink, min_window=min_window)
    _tick(progress, 1, 1, "uniform")
    return _split_plan(
        model,
        set(),
        w,
        method="uniform",
        budget=budget,
        length=length,
        seed=seed,
        sink=sink,
        full_share=0.0,
        min_window=min_window,
        calibration=None,
        model_name=model_name,
        t0=t0,
    )


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
    t0 = time.time()
    L, _, Hkv = _shape(model)
    k, w = split_budget(L * Hkv, budget, length, full_share=full_share, sink=sink, min_window=min_window)
    picks = random.Random(seed).sample(range(L * Hkv), k)
    full = {(i // Hkv, i % Hkv) for i in picks}
    _tick(progress, 1, 1, "random")
    return _split_plan(
        model,
        full,
        w,
        method="random",
        budget=budget,
        length=length,
        seed=seed,
        sink=sink,
        full_share=full_share,
        min_window=min_window,
        calibration=None,
        model_name=model_name,
        t0=t0,
    )


# ---------------------------------------------------------------------------------------------- retrieval
def weights_digest(model, sample: int = 256) -> str:
    """16 hex digits over the first ``sample`` values of every parameter: tells fine-tunes of one architecture apart."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().reshape(-1)[:sample].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _retrieval_case_fn():
    from ..measure.retrieval import retrieval_case

    return retrieval_case


def retrieval_head_scores(
    model,
    tokenizer,
    *,
    lengths=RETRIEVAL_LENGTHS,
    depths=RETRIEVAL_DEPTHS,
    needles=RETRIEVAL_NEEDLES,
    max_new: int = 24,
    seed: int = 0,
    progress=None,
    cache_dir=None,
) -> dict:
    """Per-query-head retrieval scores on pydoc prose, cached on disk.

    Returns {"scores": (layers, heads) list (None = unscored), "cases": n, "successful": m,
    "lengths", "depths", "needles", "max_new", "seed", "data"}. Scores are the mean over the cases
    the model answers (ROUGE-1 recall > 0.5); when none succeeds, the mean over all cases, and
    "successful" is 0 (the ranking is then weak; the plan records it).
    """
    from ..io import atomic_write_json
    from ..models import cache_dir as default_cache

    settings = {
        "protocol": "retrieval/1",
        "data": "pydoc",
        "lengths": [int(x) for x in lengths],
        "depths": [float(x) for x in depths],
        "needles": [int(x) for x in needles],
        "max_new": int(max_new),
        "seed": int(seed),
    }
    fp = model_fingerprint(model)
    key = hashlib.sha256(json.dumps({**settings, "weights": weights_digest(model)}, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else default_cache() / "profiles"
    path = folder / f"retrieval-{fp}-{key}.json"
    total = len(settings["lengths"]) * len(settings["depths"]) * len(settings["needles"])
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("settings") == settings:
                _tick(progress, total, total, f"retrieval scores from cache {path.name}")
                return cached["result"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            pass  # a damaged cache entry is recomputed and replaced
    case_fn = _retrieval_case_fn()
    cases = []
    for n in settings["lengths"]:
        for d in settings["depths"]:
            for k in settings["needles"]:
                cases.append(case_fn(model, tokenizer, n, d, k, max_new=max_new, seed=seed))
                _tick(progress, len(cases), total, f"retrieval case {len(cases)}/{total} ({n} tokens, depth {d})")
    ok = [c.scores for c in cases if c.recall > 0.5]
    mat = torch.stack(ok or [c.scores for c in cases]).double().mean(0)
    result = {
        "scores": [[None if math.isnan(v) else round(float(v), 8) for v in row] for row in mat.tolist()],
        "cases": len(cases),
        "successful": len(ok),
        **settings,
    }
    atomic_write_json(path, {"settings": settings, "fingerprint": fp, "result": result})
    return result


def plan_retrieval(
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
    reduce: str = "max",
    lengths=RETRIEVAL_LENGTHS,
    depths=RETRIEVAL_DEPTHS,
    needles=RETRIEVAL_NEEDLES,
    max_new: int = 24,
    model_name: str | None = None,
) -> HeadPlan:
    """The k KV heads whose query heads score highest (``reduce``: "max" or "mean" over the group) stay full.

    Ties are broken by (layer, head) order, so the plan is deterministic for a seed."""
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    t0 = time.time()
    L, H, Hkv = _shape(model)
    k, w = split_budget(L * Hkv, budget, length, full_share=full_share, sink=sink, min_window=min_window)
    res = retrieval_head_scores(
        model,
        tokenizer,
        lengths=lengths,
        depths=depths,
        needles=needles,
        max_new=max_new,
        seed=seed,
        progress=progress,
        cache_dir=cache_dir,
    )
    q = torch.tensor([[float("nan") if v is None else v for v in row] for row in res["scores"]], dtype=torch.float64)
    q = torch.nan_to_num(q, nan=0.0).view(L, Hkv, H // Hkv)
    kv = q.amax(-1) if reduce == "max" else q.mean(-1)  # (L, Hkv)
    order = sorted(range(L * Hkv), key=lambda i: (-float(kv.view(-1)[i]), i))
    full = {(i // Hkv, i % Hkv) for i in order[:k]}
    calibration = {
        "data": "pydoc (CPython help prose), retrieval needles",
        "lengths": res["lengths"],
        "depths": res["depths"],
        "needles": res["needles"],
        "items": res["cases"],
        "successful": res["successful"],
        "seed": seed,
        "reduce": reduce,
    }
    return _split_plan(
        model,
        full,
        w,
        method="retrieval",
        budget=budget,
        length=length,
        seed=seed,
        sink=sink,
        full_share=full_share,
        min_window=min_window,
        calibration=calibration,
        scores=kv.tolist(),
        model_name=model_name,
        t0=t0,
    )


# ---------------------------------------------------------------------------------------------- profilers
def _external(method: str) -> Callable[..., HeadPlan]:
    module = f"headlab.sparsify.profile_{method}"

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


def make_plan(
    method: str, model, tokenizer, *, budget: float, length: int, seed: int = 0, progress=None, cache_dir=None, **opts
) -> HeadPlan:
    """Profile ``model`` and return a per-head plan with kv_fraction <= ``budget`` at ``length`` tokens.

    opts: sink (64), min_window (64), full_share (0.6: the share of the budget spent on full
    heads), model_name (recorded in the plan), and method-specific options (retrieval: reduce, lengths, depths, needles).
    """
    if method not in PLANNERS:
        raise ValueError(f"unknown plan method {method!r}; choose one of {list(PLANNERS)}")
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
