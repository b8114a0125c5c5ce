"""Random-feature attention: Fu, Guo, Bai, Mei, "What can a single attention layer learn? A study
through the random features lens" (NeurIPS 2023, arXiv 2307.11353).

A multi-head attention layer whose query and key maps are drawn once at random (N(0, 1/D) entries,
seeded) and frozen — stored as buffers, so optimisers never see them — while the value and output maps
are trained.  This is the random-features regime studied in the paper (many heads, frozen QK); it is a
module-level simplification, not the paper's exact estimator.

Shapes: x (B, T, D) -> (B, T, D); ``return_weights`` gives A (B, H, T, T).
"""

from __future__ import annotations

import torch
from torch import nn

from ._heads import check_dims, check_input, merge_heads, split_heads
from .softmax import softmax_attend


class RandomFeatureAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, causal: bool = True, seed: int = 0):
        super().__init__()
        self.d_head = check_dims(d_model, n_heads)
        self.d_model, self.n_heads, self.causal = d_model, n_heads, causal
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w_q", torch.randn(d_model, d_model, generator=g) / d_model**0.5)
        self.register_buffer("w_k", torch.randn(d_model, d_model, generator=g) / d_model**0.5)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        check_input(x, self.d_model)
        w_q, w_k = self.get_buffer("w_q"), self.get_buffer("w_k")
        q, k = split_heads(x @ w_q, self.n_heads), split_heads(x @ w_k, self.n_heads)
        o, a = softmax_attend(q, k, split_heads(self.value(x), self.n_heads), self.causal, return_weights)
        y = self.out(merge_heads(o))
        return (y, a) if return_weights else y
