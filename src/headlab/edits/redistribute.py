"""Attention redistribution to a token group (VAR, Kang et al., ICLR 2025, arXiv 2503.03321). HP-WEIGHTS.

VAR moves surplus sink attention onto image tokens in image-centric heads. Here the target is
any token *group* (e.g. the retrieved context of a RAG prompt), given as key positions on the
edit or by name through ``ctx.state["groups"]``. Per selected head and query row i:

* sinks: the first real token (``sinks="first"``, default), explicit key positions, or
  ``"auto"`` = every key whose mean received attention exceeds ``sink_thr`` (the ACT detector, with
  token 0 included). VAR's own detector reads massive activations of the residual stream (HP-RESID),
  which an attention edit cannot see; the attention-based detector is the documented substitute.
* the row is selected when it attends to the group enough: Σ_{j∈group} A_ij >= ``min_share`` (0.2),
  and sinks inside the group hold at most ``rho`` (0.5) of that — VAR's HeadFork rule — and the
  query comes after the group (later position than every group key of its row).
* selected rows: sink columns are multiplied by ``p`` (0.6); the freed mass (1-p)·Σ_sinks A_ij goes
  to the non-sink group keys in proportion to their current attention.

p = 1 is the identity. VAR skips the last layer; pass sites accordingly (default: all layers but the last).
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.context import AttnContext
from ._util import check_finite, group_mask, visibility
from .core import SiteEdit, register


@register
class Redistribute(SiteEdit):
    """VAR-style redistribution of sink attention to ``group``; p = 1 is the identity."""

    name = "redistribute"
    summary = "sink attention above p moves to the token group in heads that look at the group"
    paper = "Kang et al., ICLR 2025, arXiv 2503.03321"

    def __init__(
        self,
        group: Any = "context",
        sites: Any = "all-but-last",
        p: float = 0.6,
        sinks: Any = "first",
        rho: float = 0.5,
        min_share: float = 0.2,
        sink_thr: float = 0.1,
        atlas: Any = None,
    ) -> None:
        p = check_finite("redistribute p", p, 0.0, 1.0)
        rho = check_finite("redistribute rho", rho, 0.0, 1.0)
        min_share = check_finite("redistribute min_share", min_share, 0.0, 1.0)
        sink_thr = check_finite("redistribute sink_thr", sink_thr, 0.0, 1.0)
        if not (sinks in ("first", "auto") or isinstance(sinks, (list, tuple))):
            raise ValueError(f"redistribute: sinks={sinks!r} must be 'first', 'auto' or a list of key positions")
        grp = list(group) if isinstance(group, (range, tuple)) else group
        super().__init__(
            sites=sites,
            atlas=atlas,
            group=grp,
            p=p,
            sinks=list(sinks) if isinstance(sinks, tuple) else sinks,
            rho=rho,
            min_share=min_share,
            sink_thr=sink_thr,
        )
        self.needs_all_queries = sinks == "auto"

    def bind(self, n_layers: int, n_heads: int) -> Redistribute:
        if self._sel == "all-but-last":
            self._sel = {l: "all" for l in range(max(n_layers - 1, 1))}
        super().bind(n_layers, n_heads)
        return self

    def _sink_mask(self, a: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        kp = ctx.key_pos
        sk = self.params["sinks"]
        if sk == "first":
            return (kp == 0)[:, None, :].expand(-1, a.shape[1], -1)
        if sk == "auto":
            vis = visibility(ctx, a.shape[-1]).to(a.dtype)
            alpha = (a * vis).sum(2) / vis.sum(2).clamp_min(1.0)
            return (alpha > self.params["sink_thr"]) & (kp >= 0)[:, None, :]
        return group_mask(list(sk), ctx, "redistribute sinks")[:, None, :].expand(-1, a.shape[1], -1)

    def weights(self, a: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        heads = self.heads_in(ctx)
        p = self.params["p"]
        if len(heads) == 0 or p == 1.0:
            return a
        sub = a[:, heads]  # (B,k,Tc,S)
        grp = group_mask(self.params["group"], ctx, "redistribute group")  # (B,S)
        if not grp.any():
            return a
        sink = self._sink_mask(sub, ctx)  # (B,k,S)
        g = grp[:, None, None, :].to(a.dtype)
        s = sink[:, :, None, :].to(a.dtype)
        share = (sub * g).sum(-1, keepdim=True)  # (B,k,Tc,1)
        sink_in_grp = (sub * g * s).sum(-1, keepdim=True)
        last_grp = torch.where(grp, ctx.key_pos, torch.full_like(ctx.key_pos, -1)).amax(-1)  # (B,)
        after = ctx.chunk_query_pos() > last_grp[:, None]  # (B,Tc)
        target = sub * g * (1 - s)  # non-sink group keys
        tsum = target.sum(-1, keepdim=True)
        sink_mass = (sub * s).sum(-1, keepdim=True)
        sel = (
            (share >= self.params["min_share"])
            & (sink_in_grp <= self.params["rho"] * share)
            & after[:, None, :, None]
            & (tsum > 0)
            & (sink_mass > 0)
        )
        freed = (1 - p) * sink_mass
        new = sub * (1 - s) + p * sub * s + freed * target / tsum.clamp_min(torch.finfo(a.dtype).tiny)
        out = a.clone()
        out[:, heads] = torch.where(sel, new, sub)
        return out


#: the factory is the class: one signature and one set of defaults
redistribute = Redistribute
