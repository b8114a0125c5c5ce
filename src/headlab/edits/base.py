"""Base class of all training-free interventions ("edits").

An edit acts at one or more *stages* of the engine, always in this order inside one layer:

    scores  S (B, H, Tc, S) = q·kᵀ·scale + mask   -> Edit.scores(S, ctx)   (HP-LOGITS)
    weights A (B, H, Tc, S) = softmax(S)            -> Edit.weights(A, ctx)  (HP-WEIGHTS)
    output  o (B, H, T, d)  = A·v                    -> Edit.output(o, ctx)   (HP-HEADOUT, before W_O)

Several edits compose in list order within each stage (``[e1, e2]`` applies e1 then e2 to the
scores, then e1 then e2 to the weights, then to the output). ``Tc`` is a chunk of queries; an edit
that must see every query of a call at once sets ``needs_all_queries = True``.

Sites are (layer, query-head) pairs; subclasses call ``self.heads_in(ctx)`` to get the
LongTensor of heads of ``ctx.layer`` they touch (empty -> the edit does nothing there).
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.context import AttnContext
from ..engine.sites import parse_sites

STAGES = ("scores", "weights", "output")


class Edit:
    """Identity edit; subclasses override one or more of ``scores``, ``weights``, ``output``."""

    name = "edit"
    needs_all_queries = False

    def __init__(self, sites: Any = "all") -> None:
        self._sel = sites
        self._sites: dict[int, list[int]] | None = None
        self._shape: tuple[int, int] | None = None

    # -- addressing -------------------------------------------------------------------
    def bind(self, n_layers: int, n_heads: int) -> Edit:
        """Resolve and validate sites for a model with ``n_layers`` x ``n_heads`` query heads."""
        self._shape = (n_layers, n_heads)
        self._sites = parse_sites(self._sel, n_layers, n_heads)
        return self

    @property
    def sites(self) -> dict[int, list[int]]:
        if self._sites is None:
            raise RuntimeError(f"{self.name}: sites not bound yet; call .bind(n_layers, n_heads) or use attach()")
        return self._sites

    def heads_in(self, ctx: AttnContext) -> torch.Tensor:
        """(k,) long tensor of the query heads this edit touches in ``ctx.layer``."""
        if self._sites is None or self._shape != (ctx.n_layers, ctx.n_heads):
            self.bind(ctx.n_layers, ctx.n_heads)
        return torch.tensor(self.sites.get(ctx.layer, []), dtype=torch.long)

    # -- stages (identity by default) --------------------------------------------------
    def scores(self, s: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return s

    def weights(self, a: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return a

    def output(self, o: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return o

    def stages(self) -> set[str]:
        """Stages this edit overrides (the engine only calls those)."""
        return {st for st in STAGES if getattr(type(self), st) is not getattr(Edit, st)}

    def active_in(self, ctx: AttnContext) -> bool:
        return len(self.heads_in(ctx)) > 0

    def describe(self) -> str:
        return f"{self.name} on {self._sel!r}"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"
