"""``retrieval`` planner: KV heads ranked by the retrieval score of their query heads (Wu et al., arXiv
2404.15574); the top k stay full, the rest sink_window(sink, w) (StreamingLLM, arXiv 2309.17453),
with (k, w) from ``budget.split_budget``.

The scores come from headlab's needle protocol (``headlab.measure.retrieval``) on CPython's pydoc
prose, never the RULER essays the evaluation uses, or on the user's own text (``calib``, a
:class:`headlab.data.calib.CalibText` or a path: its text replaces the pydoc haystack). They are cached
on disk (keyed by the model's fingerprint, a digest of its weights, the protocol's settings and the
calibration file's sha256), so a second budget is free.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ...data.calib import CalibText, as_calib
from ...patterns.headplan import HeadPlan, model_fingerprint
from .common import (
    Progress,
    SplitRequest,
    as_tuple,
    check_int,
    check_ints,
    keyword_planner,
    model_shape,
    split_plan,
    tick,
    weights_digest,
)

#: retrieval calibration defaults: needle cases in pydoc prose (lengths x depths x needles)
RETRIEVAL_LENGTHS = (500, 1000, 2000)
RETRIEVAL_DEPTHS = (0.25, 0.5, 0.75)
RETRIEVAL_NEEDLES = (0, 1, 2)


@dataclass(frozen=True)
class RetrievalRequest(SplitRequest):
    """Settings of a retrieval plan: the split of ``SplitRequest``, how a KV head's score is made from
    its query heads' (``reduce``: "max" or "mean"), the needle cases (``lengths`` >= 1 tokens,
    ``depths`` in [0, 1], ``needles`` >= 0, ``max_new`` >= 1 generated tokens), and ``calib``: the
    haystack's text (a :class:`~headlab.data.calib.CalibText` or a path; None = CPython's pydoc prose)."""

    reduce: str = "max"
    lengths: tuple[int, ...] = RETRIEVAL_LENGTHS
    depths: tuple[float, ...] = RETRIEVAL_DEPTHS
    needles: tuple[int, ...] = RETRIEVAL_NEEDLES
    max_new: int = 24
    calib: CalibText | str | Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "calib", as_calib(self.calib))
        if self.reduce not in ("max", "mean"):
            raise ValueError(f"reduce must be 'max' or 'mean', got {self.reduce!r}")
        object.__setattr__(self, "lengths", check_ints("lengths", self.lengths, 1))
        object.__setattr__(self, "needles", check_ints("needles", self.needles, 0))
        depths = as_tuple(self.depths)
        if not depths:
            raise ValueError("depths must hold at least one number in [0, 1], got none")
        for d in depths:
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d <= 1:
                raise ValueError(f"depths must be numbers in [0, 1], got {d!r}")
        object.__setattr__(self, "depths", depths)
        check_int("max_new", self.max_new, 1)


def _retrieval_case_fn():
    from ...measure.retrieval import retrieval_case

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
    calib: CalibText | None = None,
) -> dict:
    """Per-query-head retrieval scores on pydoc prose (or on ``calib``'s text), cached on disk.

    Returns {"scores": (layers, heads) list (None = unscored), "cases": n, "successful": m,
    "lengths", "depths", "needles", "max_new", "seed", "data"}. Scores are the mean over the cases
    the model answers (ROUGE-1 recall > 0.5); when none succeeds, the mean over all cases, and
    "successful" is 0 (the ranking is then weak; the plan records it). With ``calib``, "data" is
    "calib" and "calib" the sha256 of its file (part of the cache key); its text must hold at least
    max(lengths) tokens (it is never repeated).
    """
    from ...io import atomic_write_json
    from ...models import cache_dir as default_cache

    settings = {
        "protocol": "retrieval/1",
        "data": "pydoc",
        "lengths": [int(x) for x in lengths],
        "depths": [float(x) for x in depths],
        "needles": [int(x) for x in needles],
        "max_new": int(max_new),
        "seed": int(seed),
    }
    calib = as_calib(calib)
    if calib is not None:
        n_max = max(settings["lengths"])
        calib.require(tokenizer, n_max, f"method retrieval (its longest needle case, lengths up to {n_max})")
        settings.update(data="calib", calib=calib.sha256)
    fp = model_fingerprint(model)
    key = hashlib.sha256(json.dumps({**settings, "weights": weights_digest(model)}, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else default_cache() / "profiles"
    path = folder / f"retrieval-{fp}-{key}.json"
    total = len(settings["lengths"]) * len(settings["depths"]) * len(settings["needles"])
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("settings") == settings:
                tick(progress, total, total, f"retrieval scores from cache {path.name}")
                return cached["result"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            pass  # a damaged cache entry is recomputed and replaced
    case_fn = _retrieval_case_fn()
    hay = {"haystack_fn": calib.haystack} if calib is not None else {}
    cases = []
    for n in settings["lengths"]:
        for d in settings["depths"]:
            for k in settings["needles"]:
                cases.append(case_fn(model, tokenizer, n, d, k, max_new=max_new, seed=seed, **hay))
                tick(progress, len(cases), total, f"retrieval case {len(cases)}/{total} ({n} tokens, depth {d})")
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


def plan(model, tokenizer, request: RetrievalRequest, *, progress: Progress | None = None, cache_dir=None) -> HeadPlan:
    """The k KV heads whose query heads score highest (``request.reduce``: "max" or "mean" over the
    group) stay full. Ties are broken by (layer, head) order, so the plan is deterministic for a seed."""
    t0 = time.time()
    k, w = request.split(model)
    L, H, Hkv = model_shape(model)
    res = retrieval_head_scores(
        model,
        tokenizer,
        lengths=request.lengths,
        depths=request.depths,
        needles=request.needles,
        max_new=request.max_new,
        seed=request.seed,
        progress=progress,
        cache_dir=cache_dir,
        calib=request.calib,
    )
    q = torch.tensor([[float("nan") if v is None else v for v in row] for row in res["scores"]], dtype=torch.float64)
    q = torch.nan_to_num(q, nan=0.0).view(L, Hkv, H // Hkv)
    kv = q.amax(-1) if request.reduce == "max" else q.mean(-1)  # (L, Hkv)
    order = sorted(range(L * Hkv), key=lambda i: (-float(kv.view(-1)[i]), i))
    full = {(i // Hkv, i % Hkv) for i in order[:k]}
    calib = request.calib
    calibration = {
        "data": f"user text ({calib.path}), retrieval needles"
        if calib is not None
        else "pydoc (CPython help prose), retrieval needles",
        **({"source": calib.source(tokenizer)} if calib is not None else {}),
        "lengths": res["lengths"],
        "depths": res["depths"],
        "needles": res["needles"],
        "items": res["cases"],
        "successful": res["successful"],
        "seed": request.seed,
        "reduce": request.reduce,
    }
    return split_plan(
        model,
        full,
        w,
        request,
        method="retrieval",
        full_share=request.full_share,
        calibration=calibration,
        scores=kv.tolist(),
        t0=t0,
    )


plan_retrieval = keyword_planner(
    plan,
    RetrievalRequest,
    "plan_retrieval",
    """The k KV heads whose query heads score highest (``reduce``: "max" or "mean" over the group) stay full;
    keywords: the fields of :class:`RetrievalRequest`.

    Ties are broken by (layer, head) order, so the plan is deterministic for a seed.""",
)
