"""A custom streaming statistic from a plain function: ``probes.mean(fn, name=)``.

``fn(A, ctx)`` gets the attention weights of one query chunk, ``A (B, H, Tc, S)``, and the engine's
context, and returns one value per query ``(B, H, Tc)``; the probe averages them over every valid
(non-pad) query of every row and call, per (layer, head), exactly as the built-in probes do, and
``run.stats()[name]`` is the (layers, heads) mean. No map is kept.

For example, the weight each query puts on its own position (a "self" head score):

    def self_weight(a, ctx):                      # a (B, H, Tc, S)
        qi = ctx.chunk_query_pos().clamp(min=0)   # (B, Tc) positions of the chunk's queries
        col = (ctx.key_pos[:, None, :] == qi[:, :, None])  # (B, Tc, S)
        return (a * col[:, None]).sum(-1)         # (B, H, Tc)

    with headlab.attach(model, probes=[probes.mean(self_weight, name="self")]) as run: ...
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..engine.context import AttnContext
from .base import Probe

QueryFn = Callable[[torch.Tensor, AttnContext], torch.Tensor]


class MeanProbe(Probe):
    """Mean over valid queries of ``fn(A, ctx)`` per (layer, head)."""

    def __init__(self, fn: QueryFn, name: str | None = None, formula: str = "") -> None:
        if not callable(fn):
            raise ValueError(f"probes.mean needs a function fn(A, ctx) -> (B, H, Tc) values, got {type(fn).__name__}")
        super().__init__()
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"probe name must be a non-empty string, got {self.name!r}")
        self.formula = formula or f"mean over queries i of {self.name}(A, ctx)[i]"

    def update(self, a: torch.Tensor, ctx: AttnContext) -> None:
        vals = self.fn(a, ctx)
        want = tuple(a.shape[:3])
        if not isinstance(vals, torch.Tensor) or tuple(vals.shape) != want:
            got = tuple(vals.shape) if isinstance(vals, torch.Tensor) else type(vals).__name__
            raise ValueError(
                f"probe {self.name!r} in layer {ctx.layer}: fn must return one value per query, shape "
                f"(B, H, Tc) = {want}, got {got}"
            )
        self.add(ctx, vals, ctx.query_valid())


def mean(fn: QueryFn, name: str | None = None, formula: str = "") -> MeanProbe:
    """A probe averaging ``fn(A (B,H,Tc,S), ctx) -> (B,H,Tc)`` over valid queries, per (layer, head)."""
    return MeanProbe(fn, name=name, formula=formula)
