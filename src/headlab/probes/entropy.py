"""Attention entropy per head: mean over queries of −Σ_j A_ij ln A_ij (nats).

As used for focus/diffuseness analyses (e.g. CARVE, "Focusing by Contrastive Attention", SPEC §A5).
"""
from __future__ import annotations

import torch

from .base import Probe


class EntropyProbe(Probe):
    name = "entropy"
    fast_needs = ("entropy",)

    def update(self, a, ctx):
        ent = -(torch.special.xlogy(a, a)).sum(-1)  # (B, H, Tc); 0·ln 0 = 0
        self.add(ctx, ent, ctx.query_valid())

    def update_fast(self, stats, ctx):
        self.add(ctx, stats["entropy"], ctx.query_valid())
