"""Previous-token score: mean over queries i ≥ 1 of A[i, i−1] (standard head-detector practice, as in
Olsson et al., "In-context Learning and Induction Heads", arXiv 2209.11895)."""

from __future__ import annotations

import torch

from .base import Probe, RoleRule


class PrevTokenProbe(Probe):
    name = "prev_token"
    fast_needs = ("prev",)
    formula = "mean over queries i >= 1 of A[i, i-1]"
    paper = 'Olsson et al., "In-context Learning and Induction Heads", arXiv 2209.11895'
    role = RoleRule("previous-token", ">=", 0.4, "P", rank=1)

    def update(self, a, ctx):
        B, H, Tc, S = a.shape
        T = ctx.query_pos.shape[1]
        qi = ctx.q_index if ctx.q_index is not None else torch.arange(T, device=a.device)
        qabs = qi + (S - T)  # key index of each query's own position
        pidx = (qabs - 1).clamp(min=0)
        w = a.gather(-1, pidx.view(1, 1, Tc, 1).expand(B, H, Tc, 1))[..., 0]
        valid = ctx.chunk_query_pos() >= 1
        self.add(ctx, w, valid)

    def update_fast(self, stats, ctx):
        self.add(ctx, stats["prev"], ctx.query_pos >= 1)
