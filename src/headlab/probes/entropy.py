"""Attention entropy per head: mean over queries of −Σ_j A_ij ln A_ij (nats).

As used for focus/diffuseness analyses (e.g. CARVE, Ge et al., "Focusing by Contrastive Attention").
A head is *broad* when its entropy is at least 0.6 of the entropy of uniform attention over the
same visible keys (``uniform_entropy`` of :mod:`headlab.probes.roles`).
"""

from __future__ import annotations

import torch

from .base import Probe, RoleRule


class EntropyProbe(Probe):
    name = "entropy"
    fast_needs = ("entropy",)
    formula = "mean over queries i of -sum_j A[i, j] ln A[i, j] (nats)"
    paper = 'Ge et al., "Focusing by Contrastive Attention" (CARVE)'
    role = RoleRule("broad", ">=", 0.6, "B", relative_to="uniform_entropy", rank=5)

    def update(self, a, ctx):
        ent = -(torch.special.xlogy(a, a)).sum(-1)  # (B, H, Tc); 0·ln 0 = 0
        self.add(ctx, ent, ctx.query_valid())

    def update_fast(self, stats, ctx):
        self.add(ctx, stats["entropy"], ctx.query_valid())
