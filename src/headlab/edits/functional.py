"""Edits as plain functions: ``on_scores(fn, sites=)``, ``on_weights(fn, sites=)``, ``on_output(fn, sites=)``.

``fn(x, ctx)`` receives the whole tensor of one stage of one layer and returns the new tensor of
the same shape; only the selected sites (query-head numbering) take the new values, the other
heads keep theirs. The stages are those of :class:`headlab.edits.Edit`:

    on_scores   x = S (B, H, Tc, S) pre-softmax scores (masked keys hold -inf)
    on_weights  x = A (B, H, Tc, S) attention weights (rows sum to 1 over visible keys)
    on_output   x = o (B, H, T, d) per-head outputs, before W_O

``ctx`` is the engine's :class:`headlab.engine.context.AttnContext` (``ctx.layer``,
``ctx.key_pos``, ``ctx.chunk_query_pos()``, ``ctx.state``, ...). ``fn`` is only called in layers
that hold a selected site. Sites use the selector grammar of :mod:`headlab.engine.sites`
(``"L3H1,L5"``, ``{3: [1, 2]}``, ``[(3, 1)]``) or an atlas selector with ``atlas=``.

For example, temperature 2 on head 3 of layer 5 (a plain-function version of a scores edit):

    edits.on_scores(lambda s, ctx: s / 2, sites="L5H3")

The classes in this package stay for edits that must round-trip through JSON configs; a function
edit has no config (``to_config`` refuses it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..engine.context import AttnContext
from .base import Edit
from .select import resolve

StageFn = Callable[[torch.Tensor, AttnContext], torch.Tensor]


class FunctionEdit(Edit):
    """Base of the three function edits; ``stage`` names the one stage it overrides."""

    stage = ""

    def __init__(self, fn: StageFn, sites: Any = "all", atlas: Any = None, name: str | None = None) -> None:
        if not callable(fn):
            raise ValueError(f"on_{self.stage} needs a function fn(x, ctx) -> tensor, got {type(fn).__name__}")
        super().__init__(sites)
        self.fn = fn
        self.atlas = atlas
        self.name = name or f"on_{self.stage}({getattr(fn, '__name__', 'fn')})"

    def bind(self, n_layers: int, n_heads: int) -> FunctionEdit:
        self._shape = (n_layers, n_heads)
        self._sites = resolve(self._sel, n_layers, n_heads, self.atlas)
        return self

    def _apply(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        heads = self.heads_in(ctx)
        if len(heads) == 0:
            return x
        new = self.fn(x, ctx)
        if not isinstance(new, torch.Tensor) or new.shape != x.shape:
            got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
            raise ValueError(
                f"{self.name} in layer {ctx.layer}: fn must return a tensor of the {self.stage} shape "
                f"{tuple(x.shape)} (B, H, ...), got {got}"
            )
        if len(heads) == x.shape[1]:
            return new.to(x.dtype)
        out = x.clone()
        out[:, heads] = new[:, heads].to(x.dtype)
        return out

    def describe(self) -> str:
        return f"{self.name} on {self._sel!r}"


class OnScores(FunctionEdit):
    stage = "scores"

    def scores(self, s: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return self._apply(s, ctx)


class OnWeights(FunctionEdit):
    stage = "weights"

    def weights(self, a: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return self._apply(a, ctx)


class OnOutput(FunctionEdit):
    stage = "output"

    def output(self, o: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return self._apply(o, ctx)


def on_scores(fn: StageFn, sites: Any = "all", atlas: Any = None, name: str | None = None) -> OnScores:
    """Edit the pre-softmax scores S (B, H, Tc, S) of the selected heads with ``fn(S, ctx)``."""
    return OnScores(fn, sites, atlas, name)


def on_weights(fn: StageFn, sites: Any = "all", atlas: Any = None, name: str | None = None) -> OnWeights:
    """Edit the attention weights A (B, H, Tc, S) of the selected heads with ``fn(A, ctx)``."""
    return OnWeights(fn, sites, atlas, name)


def on_output(fn: StageFn, sites: Any = "all", atlas: Any = None, name: str | None = None) -> OnOutput:
    """Edit the per-head outputs o (B, H, T, d), before W_O, of the selected heads with ``fn(o, ctx)``."""
    return OnOutput(fn, sites, atlas, name)
