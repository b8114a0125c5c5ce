"""Dual-stream token emphasis (Arif et al. 2025, "Fixing Imbalanced Attention to Mitigate In-Context
Hallucination of Large Vision-Language Model", arXiv 2501.12206). HP-LOGITS.

For the last query row only (the token being generated; ``rows="all"`` for every row):
S_ij <- S_ij + α|S_ij| for emphasised keys j (default α = 0.7), and S_ij <- S_ij + β|S_ij| for
sink keys (default β = 0.3, sinks optional). The official code applies it to all heads of layers
2..L-1; ``head_weights={(l, h): s_h}`` gives the paper's head-specific variant α_h = α s_h / max s.
α = β = 0 is the identity.
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.context import AttnContext
from ..engine.sites import format_site
from ._util import check_finite, group_mask, site_values
from .core import SiteEdit, register


@register
class Emphasis(SiteEdit):
    """Emphasise a token group in the logits of the generating row; alpha = 0 (and no sinks) = identity."""

    name = "emphasis"
    summary = "S += alpha|S| on emphasised keys (and beta|S| on sinks) for the generating row"
    paper = "Arif et al. 2025, arXiv 2501.12206"

    def __init__(
        self,
        group: Any = "emphasis",
        sites: Any = "from-layer-2",
        alpha: float = 0.7,
        sinks: Any = None,
        beta: float = 0.3,
        rows: str = "last",
        head_weights: dict | None = None,
        atlas: Any = None,
    ) -> None:
        alpha = check_finite("emphasis alpha", alpha, 0.0, None)
        beta = check_finite("emphasis beta", beta, 0.0, None)
        if rows not in ("last", "all"):
            raise ValueError(f"emphasis: rows={rows!r} must be 'last' or 'all'")
        hw = None
        if head_weights is not None:
            w = site_values(head_weights, "head_weights", lo=0.0)
            mx = max(w.values())
            if mx <= 0:
                raise ValueError("emphasis: head_weights must have a positive maximum")
            hw = {format_site(*k): v / mx for k, v in w.items()}
        grp = list(group) if isinstance(group, (range, tuple)) else group
        super().__init__(
            sites=sites,
            atlas=atlas,
            group=grp,
            alpha=alpha,
            sinks=list(sinks) if isinstance(sinks, (range, tuple)) else sinks,
            beta=beta,
            rows=rows,
            head_weights=hw,
        )

    def bind(self, n_layers: int, n_heads: int) -> Emphasis:
        if self._sel == "from-layer-2":
            self._sel = {l: "all" for l in range(min(2, n_layers - 1), n_layers)}
        super().bind(n_layers, n_heads)
        return self

    def _json_params(self) -> dict:
        return {k: v for k, v in self.params.items() if not (k == "head_weights" and v is None)}

    def scores(self, s: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        return self._emphasise(s, ctx, self.params["group"], self.params["sinks"], self.params["rows"])

    def _emphasise(self, s: torch.Tensor, ctx: AttnContext, group: Any, sinks: Any, rows: str = "last") -> torch.Tensor:
        """S + alpha|S| on the keys of ``group`` (+ beta|S| on ``sinks``, None: none) in this edit's heads; only the
        generating row when ``rows`` is "last"."""
        heads = self.heads_in(ctx)
        alpha, beta = self.params["alpha"], self.params["beta"]
        if len(heads) == 0 or (alpha == 0 and (beta == 0 or sinks is None)):
            return s
        hw = self.params["head_weights"]
        h_scale = torch.tensor(
            [hw.get(format_site(ctx.layer, int(h)), 0.0) if hw else 1.0 for h in heads], dtype=s.dtype, device=s.device
        )[None, :, None, None]
        coef = alpha * group_mask(group, ctx, f"{self.name} group").to(s.dtype)  # (B,S)
        if sinks is not None and beta != 0:
            coef = coef + beta * group_mask(sinks, ctx, f"{self.name} sinks").to(s.dtype)
        coef = coef[:, None, None, :] * h_scale  # (B,k,1,S)
        if rows == "last":
            qp = ctx.chunk_query_pos()
            row = (qp == ctx.query_pos.amax(dim=1, keepdim=True)) & (qp >= 0)  # (B,Tc)
            coef = coef * row[:, None, :, None].to(s.dtype)
        sub = s[:, heads]
        finite = torch.isfinite(sub)
        out = s.clone()
        out[:, heads] = torch.where(finite, sub + coef * sub.abs(), sub)
        return out


#: the factory is the class: one signature and one set of defaults
emphasis = Emphasis
