"""What the per-head planners share: the request every planner takes (KV budget, length, seed), the
full/streaming split of DuoAttention (Xiao et al., arXiv 2410.10819) and retrieval-head work (Wu et
al., arXiv 2404.15574) with sink + window streaming heads (StreamingLLM, arXiv 2309.17453), and
the model facts a plan depends on (shape, context length, a digest of the weights that keys the
on-disk profile caches).

Every planner module defines one request dataclass (its settings) on top of :class:`PlanRequest`
or :class:`SplitRequest`; a request checks its values when it is made and raises ``ValueError``
naming the bad value and the valid range.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ...patterns.headplan import HeadPlan, model_info, plan_from_entries
from .budget import FULL, check_budget, split_budget, streaming

Progress = Callable[[int, int, str], None]


# ---------------------------------------------------------------------------------------------- checks
def check_int(name: str, value, lo: int) -> int:
    """``value`` if it is an integer >= ``lo``; ValueError naming the value and the range otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


def as_tuple(value) -> tuple:
    """A list or tuple as a tuple; any other value as a 1-tuple (``--opt lengths=1024`` gives an int)."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def check_ints(name: str, values: Sequence, lo: int) -> tuple[int, ...]:
    """A non-empty tuple of integers >= ``lo``; ValueError naming the bad value and the range."""
    values = as_tuple(values)
    if not values:
        raise ValueError(f"{name} must hold at least one integer >= {lo}, got none")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be integers >= {lo}, got {v!r}")
    return values


def check_length(model, length) -> int:
    """``length`` as an int in 1..model context; ValueError naming the value and the range."""
    maxpos = model_info(model)["max_positions"]
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")
    if maxpos is not None and length > maxpos:
        raise ValueError(f"length {length} is beyond the model's context: valid lengths are 1..{maxpos}")
    return length


# ---------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class PlanRequest:
    """What every planner is asked for: a plan with kv_fraction <= ``budget`` (in (0, 1]) at
    ``length`` tokens (>= 1; the model's context is checked when the plan is made); ``seed`` fixes
    calibration data and random choices; ``model_name`` is recorded in the plan."""

    budget: float
    length: int
    seed: int = 0
    model_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", check_budget(self.budget))
        check_int("length", self.length, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.model_name is not None and not isinstance(self.model_name, str):
            raise ValueError(f"model_name must be a string or None, got {self.model_name!r}")


@dataclass(frozen=True)
class SplitRequest(PlanRequest):
    """A plan of k full KV heads and streaming heads sink_window(``sink`` >= 0, w >= ``min_window`` >= 1),
    ``full_share`` (in [0, 1]) of the budget spent on the full heads (``budget.split_budget``)."""

    sink: int = 64
    min_window: int = 64
    full_share: float = 0.6

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("sink", self.sink, 0)
        check_int("min_window", self.min_window, 1)
        fs = self.full_share
        if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not 0 <= fs <= 1:
            raise ValueError(f"full_share must be in [0, 1], got {fs!r}")

    def split(self, model, full_share: float | None = None) -> tuple[int, int]:
        """(k full KV heads, streaming window w) of ``model`` within the budget at ``length`` tokens
        (``budget.split_budget``; ``full_share`` overrides the request's); checks the length against the model."""
        check_length(model, self.length)
        L, _, Hkv = model_shape(model)
        share = self.full_share if full_share is None else full_share
        return split_budget(L * Hkv, self.budget, self.length, full_share=share, sink=self.sink, min_window=self.min_window)


# ---------------------------------------------------------------------------------------------- helpers
def model_shape(model) -> tuple[int, int, int]:
    """(layers, query heads, KV heads) as the plan records them."""
    info = model_info(model)
    return info["n_layers"], info["n_heads"], info["n_kv_heads"]


def keyword_planner(
    plan: Callable[..., HeadPlan], request: Callable[..., PlanRequest], name: str, doc: str
) -> Callable[..., HeadPlan]:
    """``plan(model, tokenizer, request(**settings), progress=..., cache_dir=...)`` with the request's fields as
    keywords (the signature of ``make_plan`` minus ``method``): the request dataclass stays the one home of a
    planner's settings and their defaults."""

    def run(model, tokenizer, *, progress: Progress | None = None, cache_dir=None, **settings) -> HeadPlan:
        return plan(model, tokenizer, request(**settings), progress=progress, cache_dir=cache_dir)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    return run


def tick(progress: Progress | None, done: int, total: int, what: str) -> None:
    if progress is not None:
        progress(done, total, what)


def weights_digest(model, sample: int = 256) -> str:
    """16 hex digits over the first ``sample`` values of every parameter: tells fine-tunes of one architecture apart."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().reshape(-1)[:sample].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def split_plan(
    model,
    full: set[tuple[int, int]],
    window: int,
    request: SplitRequest,
    *,
    method: str,
    full_share: float,
    calibration,
    scores=None,
    t0: float,
    **options,
) -> HeadPlan:
    """A plan whose KV heads in ``full`` are causal and the rest sink_window(request.sink, window); ``options``
    are recorded after the split's own."""
    L, _, Hkv = model_shape(model)
    sink, min_window = request.sink, request.min_window
    entries = [[FULL if (li, h) in full else streaming(sink, window) for h in range(Hkv)] for li in range(L)]
    return plan_from_entries(
        entries,
        model,
        length=request.length,
        method=method,
        budget=request.budget,
        seed=request.seed,
        calibration=calibration,
        scores=scores,
        model_name=request.model_name,
        options={
            "sink": sink,
            "window": window,
            "full_share": full_share,
            "min_window": min_window,
            "full_heads": len(full),
            **options,
        },
        seconds=round(time.time() - t0, 2),
    )
