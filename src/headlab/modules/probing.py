"""Efficient Probing (EP): multi-query cross-attention pooling for frozen encoders.
Psomas et al., "Attention, Please! Revisiting Attentive Probing ..." (ICLR 2026, arXiv 2506.10178),
official repo billpsomas/efficient-probing, ``poolings/ep.py``.

M learnable queries Q (M, C) attend over the N tokens X (B, N, C) with a single head and no key
projection (keys = X, scale C^-1/2).  Values W_v X (B, N, C/d_out) are split into M chunks of width
C/(d_out·M); query m aggregates only its own chunk; the chunks are concatenated into a (B, C/d_out)
feature and a linear classifier maps it to ``n_classes`` logits.

Shapes: x (B, N, C), optional mask (B, N) bool (True = real token) -> logits (B, n_classes);
:meth:`pool` returns the (B, C/d_out) feature and the (B, M, N) attention.
"""

from __future__ import annotations

import torch
from torch import nn


class EfficientProbing(nn.Module):
    def __init__(self, d_in: int, n_classes: int, n_queries: int = 32, d_out: int = 1):
        super().__init__()
        if d_in % d_out or (d_in // d_out) % n_queries:
            raise ValueError(f"d_in={d_in} must be divisible by d_out={d_out} and d_in/d_out by n_queries={n_queries}")
        if n_classes < 1:
            raise ValueError(f"n_classes={n_classes} must be >= 1")
        self.d_in, self.n_queries, self.d_feat = d_in, n_queries, d_in // d_out
        self.queries = nn.Parameter(torch.randn(n_queries, d_in) * d_in**-0.5)
        self.value = nn.Linear(d_in, self.d_feat)
        self.head = nn.Linear(self.d_feat, n_classes)

    def pool(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"expected x of shape (B, N, {self.d_in}), got {tuple(x.shape)}")
        b, n, _ = x.shape
        logits = torch.einsum("mc,bnc->bmn", self.queries, x) * self.d_in**-0.5
        if mask is not None:
            if mask.shape != (b, n):
                raise ValueError(f"mask must be (B, N) = {(b, n)}, got {tuple(mask.shape)}")
            logits = logits.masked_fill(~mask.bool()[:, None, :], float("-inf"))
        attn = logits.softmax(-1)  # (B,M,N)
        v = self.value(x).view(b, n, self.n_queries, self.d_feat // self.n_queries)  # (B,N,M,c)
        feat = torch.einsum("bmn,bnmc->bmc", attn, v).reshape(b, self.d_feat)
        return feat, attn

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.pool(x, mask)[0])
