"""ACT: attention calibration of hidden sinks (Yu et al., ICML 2024, arXiv 2406.15765). HP-WEIGHTS.

Per selected head and per input:
1. Detection: α_k = mean of A_ik over the queries i that can see key k (within this call). Keys
   with α_k > ``thr`` (default 0.1, the official code's absolute threshold) are sinks; the first
   real token (key position 0, the start-of-text sink) is always excluded (the official code drops
   the first detected index, which is intended to be token 0).
2. Every row i keeps ``beta`` of its sink attention (default 0.4): A_ik <- β A_ik for sink k; the
   freed mass f_i = (1-β) Σ_k∈sinks A_ik is given to the other keys in proportion to the row's
   non-sink attention (token 0 included). Rows with no non-sink attention are left unchanged.

Detection needs every query of the call at once (``needs_all_queries``). In a decode step
(T = 1) α_k is that single row, i.e. "the same rule per row".
The head search on a tuning set is :func:`headlab.steer.tune.search_act`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.context import AttnContext
from ._util import check_finite, visibility
from .core import SiteEdit, register


def hidden_sinks(a: torch.Tensor, ctx: AttnContext, thr: float) -> torch.Tensor:
    """(B, k, S) bool: hidden sinks of each head given its weights a (B, k, T, S) over all queries."""
    vis = visibility(ctx, a.shape[-1]).to(a.dtype)  # (B,1,T,S)
    n = vis.sum(dim=2)  # (B,1,S)
    alpha = (a * vis).sum(dim=2) / n.clamp_min(1.0)  # (B,k,S)
    kp = ctx.key_pos[:, None, :]
    return (alpha > thr) & (n > 0) & (kp > 0)


def calibrate_rows(a: torch.Tensor, sink: torch.Tensor, beta: float) -> torch.Tensor:
    """Apply step 2 to a (B, k, T, S) given sink (B, k, S) bool."""
    m = sink[:, :, None, :].to(a.dtype)  # (B,k,1,S)
    sink_mass = (a * m).sum(-1, keepdim=True)  # (B,k,T,1)
    rest = a * (1 - m)
    rest_sum = rest.sum(-1, keepdim=True)
    ok = (rest_sum > 0) & (sink_mass > 0)
    freed = (1.0 - beta) * sink_mass
    new = a * (1 - m) + beta * a * m + freed * rest / rest_sum.clamp_min(torch.finfo(a.dtype).tiny)
    return torch.where(ok, new, a)


@register
class ACT(SiteEdit):
    """ACT calibration on ``sites``; beta = 1 is the identity."""

    name = "act"
    summary = "hidden sinks (alpha > thr, position > 0) keep beta of their attention; the rest goes to other keys"
    paper = "Yu et al., ICML 2024, arXiv 2406.15765"
    needs_all_queries = True

    def __init__(self, sites: Any = "all", beta: float = 0.4, thr: float = 0.1, atlas: Any = None) -> None:
        beta = check_finite("act beta", beta, 0.0, 1.0)
        thr = check_finite("act thr", thr, 0.0, 1.0)
        super().__init__(sites=sites, atlas=atlas, beta=beta, thr=thr)
        self.beta, self.thr = beta, thr

    def weights(self, a: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        heads = self.heads_in(ctx)
        if len(heads) == 0 or self.beta == 1.0:
            return a
        sub = a[:, heads]
        sink = hidden_sinks(sub, ctx, self.thr)
        out = a.clone()
        out[:, heads] = calibrate_rows(sub, sink, self.beta)
        return out


#: the factory is the class: one signature and one set of defaults
act = ACT
