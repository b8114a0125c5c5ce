"""Span exit: a token group's keys are dropped after layer l (the idea of DyVTE, "Dynamic Visual
Token Exit" for multimodal LLMs, which drops all visual tokens after a layer chosen by a hypernetwork).
HP-LOGITS, in every head of layers > ``after_layer``.

Group keys get logit -inf, except a query's own position (so a query inside the group keeps a
valid row). The group's hidden states keep flowing; only other tokens stop reading them.
``after_layer = n_layers - 1`` is the identity.
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.context import AttnContext
from ._util import group_mask
from .core import SiteEdit, register


@register
class SpanExit(SiteEdit):
    """Drop the keys of ``group`` in every layer after ``after_layer``."""

    name = "span_exit"
    summary = "keys of the group are masked out in every layer after after_layer"

    def __init__(self, group: Any = "context", after_layer: int = 0, sites: Any = None, atlas: Any = None) -> None:
        if not isinstance(after_layer, int) or isinstance(after_layer, bool) or after_layer < 0:
            raise ValueError(f"span_exit: after_layer={after_layer!r} must be an int >= 0")
        grp = list(group) if isinstance(group, (range, tuple)) else group
        super().__init__(sites=sites, atlas=atlas, group=grp, after_layer=after_layer)

    def bind(self, n_layers: int, n_heads: int) -> SpanExit:
        al = self.params["after_layer"]
        if al >= n_layers:
            raise ValueError(f"span_exit: after_layer={al} out of range: valid 0..{n_layers - 1}")
        if self._sel is None:
            self._sel = {l: "all" for l in range(al + 1, n_layers)}
        super().bind(n_layers, n_heads)
        return self

    def scores(self, s: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        heads = self.heads_in(ctx)
        if len(heads) == 0 or ctx.layer <= self.params["after_layer"]:
            return s
        grp = group_mask(self.params["group"], ctx, "span_exit group")[:, None, :]  # (B,1,S)
        own = ctx.key_pos[:, None, :] == ctx.chunk_query_pos()[:, :, None]  # (B,Tc,S)
        drop = (grp & ~own)[:, None]  # (B,1,Tc,S)
        out = s.clone()
        out[:, heads] = s[:, heads].masked_fill(drop, float("-inf"))
        return out


#: the factory is the class: one signature and one set of defaults
span_exit = SpanExit
