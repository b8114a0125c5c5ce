"""Dual-stream token selection with emphasis (Arif et al. 2025, "Fixing Imbalanced Attention to Mitigate In-Context
Hallucination of Large Vision-Language Model", arXiv 2501.12206), text version. HP-LOGITS.

The paper picks the image tokens to emphasise from the vision encoder's attention: a *local* stream (the top 25 % of
tokens by the [CLS] attention of the first layer) minus a *sink* stream (outliers of a late layer's [CLS] attention
under the IQR rule, Q3 + 1.5 IQR), then adds α|S| to the logits of the emphasised tokens and β|S| to those of the
sinks in the generating row of LLM layers 2..L-1, optionally with a head-specific α_h = α s_h / max s (s_h: a head's
visual sensitivity).  Text version: the tokens are those of a token group (default ``"context"``), ranked by the
attention the generating row (the last query of the prompt) gives them, head-summed, in layer ``select_layer`` (the
local stream: the top ``ratio`` of the group) and in layer ``sink_layer`` (the sink stream: IQR outliers among the
group); both layers must come before the first emphasised layer, so the selection is made in the same prompt
forward and kept for the decoding steps (it is redone at the next prompt).  The emphasis itself is
:class:`headlab.edits.emphasis.Emphasis` (rows="last").  α = β = 0 is the identity.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..engine.context import AttnContext
from ._util import check_finite, group_mask
from .core import register
from .emphasis import Emphasis


def local_stream(p: torch.Tensor, ratio: float) -> torch.Tensor:
    """Indices into ``p`` (N,) of its top ``ceil(ratio * N)`` entries (ties: the earlier index)."""
    k = max(1, math.ceil(ratio * p.numel())) if p.numel() else 0
    order = sorted(range(p.numel()), key=lambda i: (-float(p[i]), i))
    return torch.tensor(sorted(order[:k]), dtype=torch.long)


def sink_stream(p: torch.Tensor) -> torch.Tensor:
    """Indices into ``p`` (N,) of its outliers under the IQR rule: p > Q3 + 1.5 (Q3 - Q1) (linear quantiles)."""
    if p.numel() < 4:
        return torch.zeros(0, dtype=torch.long)
    q1, q3 = torch.quantile(p.double(), torch.tensor([0.25, 0.75], dtype=torch.float64)).tolist()
    return torch.nonzero(p.double() > q3 + 1.5 * (q3 - q1)).flatten()


@register
class DualStream(Emphasis):
    """Emphasise the top ``ratio`` of ``group`` by the generating row's attention in ``select_layer``, less the IQR
    outliers of ``sink_layer`` (those get ``beta`` instead), in the generating row of layers 2..L-1."""

    name = "dual_stream"
    summary = "select the top ratio of a group by layer-select_layer attention (less IQR sinks), then emphasise"
    paper = "Arif et al. 2025, arXiv 2501.12206"

    def __init__(
        self,
        group: Any = "context",
        sites: Any = "from-layer-2",
        alpha: float = 0.7,
        beta: float = 0.3,
        ratio: float = 0.25,
        select_layer: int = 0,
        sink_layer: int = 1,
        head_weights: dict | None = None,
        atlas: Any = None,
    ) -> None:
        check_finite("dual_stream ratio", ratio, 0.0, 1.0, lo_open=True)
        for name, v in (("select_layer", select_layer), ("sink_layer", sink_layer)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"dual_stream: {name}={v!r} must be an int >= 0")
        super().__init__(group=group, sites=sites, alpha=alpha, beta=beta, rows="last", head_weights=head_weights, atlas=atlas)
        self.params = {
            "group": self.params["group"],
            "alpha": self.params["alpha"],
            "beta": self.params["beta"],
            "ratio": float(ratio),
            "select_layer": select_layer,
            "sink_layer": sink_layer,
            "head_weights": self.params["head_weights"],
        }
        self._key = f"dual_stream:{id(self)}"

    def bind(self, n_layers: int, n_heads: int) -> DualStream:
        super().bind(n_layers, n_heads)
        first = min(self.sites) if self.sites else n_layers
        for name in ("select_layer", "sink_layer"):
            v = self.params[name]
            if not v < first:
                raise ValueError(
                    f"dual_stream: {name}={v} must come before the first emphasised layer {first} (valid 0..{first - 1})"
                )
        return self

    def _select(self, s: torch.Tensor, ctx: AttnContext, which: str) -> None:
        """Record, per batch row whose generating row is in this call, the group's key positions of stream ``which``."""
        qp = ctx.chunk_query_pos()
        last = (qp == ctx.query_pos.amax(dim=1, keepdim=True)) & (qp >= 0)  # (B, Tc)
        grp = group_mask(self.params["group"], ctx, "dual_stream group")  # (B, S)
        state = ctx.state.setdefault(self._key, {"local": {}, "sinks": {}})
        for b in range(s.shape[0]):
            rows = torch.nonzero(last[b]).flatten()
            if len(rows) == 0:
                continue
            p = torch.softmax(s[b, :, int(rows[-1])].double(), -1).sum(0).cpu()  # (S,) head-summed attention
            keys = torch.nonzero(grp[b]).flatten().cpu()
            pick = local_stream(p[keys], self.params["ratio"]) if which == "local" else sink_stream(p[keys])
            state[which][b] = ctx.key_pos[b].cpu()[keys[pick]].tolist() if len(keys) else []

    def scores(self, s: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        prefill = ctx.query_pos.shape[1] > 1
        if prefill and ctx.layer == self.params["select_layer"]:
            self._select(s, ctx, "local")
        if prefill and ctx.layer == self.params["sink_layer"]:
            self._select(s, ctx, "sinks")
        if len(self.heads_in(ctx)) == 0:
            return s
        state = ctx.state.get(self._key)
        if state is None or len(state["local"]) < s.shape[0]:
            raise ValueError("dual_stream: no selection yet (the prompt's forward must run first, with the token group)")
        B = s.shape[0]
        sinks = [set(state["sinks"].get(b, [])) for b in range(B)]
        emph = [[j for j in state["local"][b] if j not in sinks[b]] for b in range(B)]
        return self._emphasise(s, ctx, emph, [sorted(x) for x in sinks])


#: the factory is the class: one signature and one set of defaults
dual_stream = DualStream
