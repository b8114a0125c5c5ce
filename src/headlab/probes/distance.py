"""Mean attention distance: mean over queries i of Σ_j A_ij (i − j) in causal models, and of
Σ_j A_ij |i − j| in bidirectional ones (where signed distances would cancel); positions are counted
from each row's first real token (ViT "mean attention distance"; the windowed attention distance
of Li et al., "Attention Illuminates LLM Reasoning: the Preplan-and-Anchor Rhythm", 2025).
A head is *local* when its mean distance is at most 4 tokens and it is not a sink head."""

from __future__ import annotations

import torch

from .base import Probe, RoleRule


class DistanceProbe(Probe):
    name = "distance"
    fast_needs = ("distance",)
    formula = "mean over queries i of sum_j A[i, j] (i - j); |i - j| in bidirectional models (tokens)"
    paper = (
        'mean attention distance (Dosovitskiy et al., arXiv 2010.11929); Li et al., "Attention Illuminates LLM Reasoning", 2025'
    )
    role = RoleRule("local", "<=", 4.0, "L", unless="sink", rank=4)

    def supports_fast(self, causal: bool) -> bool:
        return causal  # |i − j| is not linear in A·pos: bidirectional models use the chunked path

    def update(self, a, ctx):
        kp = ctx.key_pos.clamp(min=0).to(a.dtype)  # (B, S)
        qp = ctx.chunk_query_pos().to(a.dtype)  # (B, Tc)
        if ctx.causal:  # Σ_j A_ij (i − j), also when Σ_j A_ij < 1 (sink logits)
            dist = torch.einsum("bhts,bts->bht", a, qp[:, :, None] - kp[:, None, :])
        else:
            dist = torch.einsum("bhts,bts->bht", a, (qp[:, :, None] - kp[:, None, :]).abs())
        self.add(ctx, dist, ctx.query_valid())

    def update_fast(self, stats, ctx):
        self.add(ctx, stats["distance"], ctx.query_valid())
