"""ZeroTuning: per-head scaling of the initial token's attention (Han et al. 2025, arXiv 2505.11739).

For each selected head: A_i0 <- γ A_i0, then the row is renormalised, i.e.
a'_0 = γ a_0 / D, a'_j = a_j / D with D = (γ - 1) a_0 + 1. This equals adding ln γ to the
logit of the initial token before the softmax, which is how it is applied here (HP-LOGITS):
cheaper, exact, and γ = 1 leaves the logits untouched. γ > 1 flattens attention over the other
tokens, γ < 1 sharpens it. ``span=(start, end)`` scales a span of key positions instead of token 0
(positions counted from the first real token; with no BOS the first text token is the sink).

The γ search (head profiling + validation sweep) lives in :mod:`headlab.steer.tune`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..engine.context import AttnContext
from ..engine.sites import format_site
from ._util import check_finite, site_values
from .core import SiteEdit, _pairs, register


@register
class ZeroTuning(SiteEdit):
    """``zerotuning(gamma={(l, h): g})`` or ``zerotuning(1.5, sites="L0,L1")``; γ > 0, 1 = no change."""

    name = "zerotuning"
    summary = "scale the initial token's attention by gamma and renormalise"
    paper = "Han et al. 2025, arXiv 2505.11739"

    def __init__(self, gamma: Any, sites: Any = None, span: tuple[int, int] = (0, 1), atlas: Any = None) -> None:
        s0, s1 = int(span[0]), int(span[1])
        if not 0 <= s0 < s1:
            raise ValueError(f"zerotuning: span={span!r} must be (start, end) with 0 <= start < end")
        if isinstance(gamma, dict):
            if sites is not None:
                raise ValueError("zerotuning: give either gamma={(l, h): g} or gamma=<float> with sites=, not both")
            g = site_values(gamma, "gamma", lo=0.0, lo_open=True)
            super().__init__(sites=list(g), atlas=None, gamma={format_site(*k): v for k, v in g.items()}, span=[s0, s1])
            self._g: dict[tuple[int, int], float] | float = g
        else:
            gv = check_finite("gamma", gamma, lo=0.0, lo_open=True)
            super().__init__(sites="all" if sites is None else sites, atlas=atlas, gamma=gv, span=[s0, s1])
            self._g = gv
        self._span = (s0, s1)

    @classmethod
    def from_params(cls, sites: Any, params: dict) -> ZeroTuning:
        g = params["gamma"]
        if isinstance(g, dict):
            return cls(g, span=tuple(params.get("span", (0, 1))))
        return cls(g, sites=_pairs(sites), span=tuple(params.get("span", (0, 1))))

    def log_gamma(self, layer: int, heads: torch.Tensor) -> torch.Tensor:
        if isinstance(self._g, dict):
            return torch.tensor([math.log(self._g[(layer, int(h))]) for h in heads], dtype=torch.float64)
        return torch.full((len(heads),), math.log(self._g), dtype=torch.float64)

    def scores(self, s: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        heads = self.heads_in(ctx)
        if len(heads) == 0:
            return s
        lg = self.log_gamma(ctx.layer, heads)
        keep = lg != 0.0
        heads, lg = heads[keep], lg[keep].to(s.dtype).to(s.device)
        if len(heads) == 0:
            return s
        kp = ctx.key_pos
        in_span = ((kp >= self._span[0]) & (kp < self._span[1])).to(s.dtype)  # (B, S)
        bias = lg[None, :, None, None] * in_span[:, None, None, :]  # (B, k, 1, S)
        out = s.clone()
        out[:, heads] = s[:, heads] + bias
        return out


#: the factory is the class: one signature and one set of defaults
zerotuning = ZeroTuning
