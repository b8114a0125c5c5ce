"""Previous-token score: mean over queries i ≥ 1 of A[i, i−1] (standard practice, SPEC §A9)."""
from __future__ import annotations


from .base import Probe


class PrevTokenProbe(Probe):
    name = "prev_token"
    fast_needs = ("prev",)

    def update(self, a, ctx):
        B, H, Tc, S = a.shape
        T = ctx.query_pos.shape[1]
        qabs = ctx.q_index + (S - T)  # key index of each query's own position
        pidx = (qabs - 1).clamp(min=0)
        w = a.gather(-1, pidx.view(1, 1, Tc, 1).expand(B, H, Tc, 1))[..., 0]
        valid = ctx.chunk_query_pos() >= 1
        self.add(ctx, w, valid)

    def update_fast(self, stats, ctx):
        self.add(ctx, stats["prev"], ctx.query_pos >= 1)
