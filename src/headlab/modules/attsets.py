"""AttSets: attention-weighted set pooling, Yang et al., "Robust Attentional Aggregation of Deep Feature
Sets for Multi-view 3D Reconstruction" (IJCV 2019, arXiv 1808.00758).

A shared dense layer scores every element and every feature: C = X W + b (B, N, D); the scores are
normalised over the set index n separately for each feature d, and y_d = Σ_n softmax_n(C)_{n,d} X_{n,d}.
Permutation-invariant, any N.  ``squash="tanh"`` applies tanh to C before the softmax.

Shapes: x (B, N, D), optional mask (B, N) bool (True = real element) -> y (B, D).
"""

from __future__ import annotations

import torch
from torch import nn

from ._heads import check_choice

SQUASH = {"none": lambda c: c, "tanh": torch.tanh}


class AttSets(nn.Module):
    def __init__(self, dim: int, squash: str = "none"):
        super().__init__()
        check_choice("squash", squash, SQUASH)
        self.dim, self.squash = dim, squash
        self.score = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected x of shape (B, N, {self.dim}), got {tuple(x.shape)}")
        c = SQUASH[self.squash](self.score(x))
        if mask is not None:
            if mask.shape != x.shape[:2]:
                raise ValueError(f"mask must be (B, N) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
            c = c.masked_fill(~mask.bool()[..., None], float("-inf"))
        return (c.softmax(dim=1) * x).sum(1)
