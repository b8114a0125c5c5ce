"""Induction score (Olsson et al., "In-context Learning and Induction Heads", arXiv 2209.11895;
standard head-detector practice).

Input: [prefix] + r + r with r = n uniformly random tokens. For a query i in the second copy the
induction target is the key right after the previous occurrence of token i: j = i − n + 1.
Score = mean over second-copy queries of A[i, i − n + 1]. The input protocol (random tokens, one
forward pass) is :func:`headlab.measure.induction.induction_scores`.
"""

from __future__ import annotations

import torch

from .base import Probe, RoleRule


class InductionProbe(Probe):
    name = "induction"
    formula = "on random tokens r + r (|r| = n), mean over second-copy queries i of A[i, i-n+1]"
    paper = 'Olsson et al., "In-context Learning and Induction Heads", arXiv 2209.11895'
    role = RoleRule("induction", ">=", 0.3, "I", rank=2)
    protocol = "repeated random tokens (headlab.measure.induction_scores)"

    def __init__(self, n: int, offset: int = 0) -> None:
        super().__init__()
        if n < 2:
            raise ValueError(f"repeat length n must be >= 2, got {n}")
        self.n, self.offset = n, offset

    def update(self, a, ctx):
        B, H, Tc, S = a.shape
        qpos = ctx.chunk_query_pos()  # (B, Tc)
        second = (qpos >= self.offset + self.n) & (qpos < self.offset + 2 * self.n)
        T = ctx.query_pos.shape[1]
        qi = ctx.q_index if ctx.q_index is not None else torch.arange(T, device=a.device)
        qabs = qi + (S - T)
        tgt = (qabs - self.n + 1).clamp(min=0)
        w = a.gather(-1, tgt.view(1, 1, Tc, 1).expand(B, H, Tc, 1))[..., 0]
        self.add(ctx, w, second)
