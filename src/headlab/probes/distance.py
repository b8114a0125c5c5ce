"""Mean attention distance: mean over queries i of Σ_j A_ij (i − j), positions counted from
each row's first real token (ViT "mean attention distance" / WAAD-style, SPEC §A4)."""
from __future__ import annotations

import torch

from .base import Probe


class DistanceProbe(Probe):
    name = "distance"
    fast_needs = ("distance",)

    def update(self, a, ctx):
        kp = ctx.key_pos.clamp(min=0).to(a.dtype)  # (B, S)
        mean_j = torch.einsum("bhts,bs->bht", a, kp)
        dist = ctx.chunk_query_pos().to(a.dtype)[:, None, :] - mean_j
        self.add(ctx, dist, ctx.query_valid())

    def update_fast(self, stats, ctx):
        self.add(ctx, stats["distance"], ctx.query_valid())
