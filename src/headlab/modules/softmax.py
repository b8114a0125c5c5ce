"""Plain multi-head softmax attention (Vaswani et al., arXiv 1706.03762), the baseline of every lab run.

Shapes: x (B, T, D) -> y (B, T, D); D = n_heads * d.  ``forward(x, return_weights=True)`` also returns
the attention weights A (B, H, T, T) (rows sum to 1), computed on the eager path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._heads import causal_mask, check_dims, check_input, merge_heads, split_heads


def softmax_weights(q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """A = softmax(q k^T / sqrt(d) + M): q (B,H,T,d), k (B,H,S,d) -> (B,H,T,S) (queries = last T keys)."""
    t, s, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if causal:
        mask = causal_mask(s, q.device)[s - t :]
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1)


def softmax_attend(q, k, v, causal: bool, return_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-head outputs o (B,H,T,d) and, with ``return_weights``, A (B,H,T,S) on the eager path (SDPA otherwise)."""
    if return_weights:
        a = softmax_weights(q, k, causal)
        return a @ v, a
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal), None


class MultiHeadAttention(nn.Module):
    """Causal (or bidirectional) multi-head softmax attention with fused q/k/v projection."""

    def __init__(self, d_model: int, n_heads: int, causal: bool = True):
        super().__init__()
        self.d_head = check_dims(d_model, n_heads)
        self.d_model, self.n_heads, self.causal = d_model, n_heads, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project x (B,T,D) to q, k, v each (B,H,T,d)."""
        check_input(x, self.d_model)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return split_heads(q, self.n_heads), split_heads(k, self.n_heads), split_heads(v, self.n_heads)

    def attend(self, q, k, v, return_weights: bool):
        """Per-head outputs o (B,H,T,d) and optionally A (B,H,T,T)."""
        return softmax_attend(q, k, v, self.causal, return_weights)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        q, k, v = self.heads(x)
        o, a = self.attend(q, k, v, return_weights)
        y = self.out(merge_heads(o))
        return (y, a) if return_weights else y
