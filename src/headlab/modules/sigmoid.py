"""Sigmoid attention as used by Gu et al., "When Attention Sink Emerges in Language Models: An Empirical
View" (ICLR 2025, arXiv 2410.10781), official repo sail-sg/Attention-Sink, ``lit_gpt/model_attn_sim.py``.

Without normalisation (the variant in which no attention sink emerges):
    o_i = Σ_{j ≤ i} σ(q_i·k_j / √d) v_j            (no row normalisation, no bias)
Normalised variant (``normalize="sum"``):
    o_i = Σ_{j ≤ i} σ(s_ij) v_j / (Σ_{j ≤ i} σ(s_ij) + 1e-8)

Shapes: q, k, v (B, H, T, d) for :func:`sigmoid_attention`; the module maps x (B, T, D) -> (B, T, D).
``return_weights=True`` returns the raw σ weights W (B, H, T, T) (zero above the diagonal); rows do not
sum to one unless normalised.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._heads import causal_mask, check_choice, merge_heads
from .softmax import MultiHeadAttention

EPS = 1e-8

#: normaliser name -> function of the masked σ weights (B,H,T,S) returning the weights actually used
NORMALIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda w: w,
    "sum": lambda w: w / (w.sum(-1, keepdim=True) + EPS),
}


def sigmoid_weights(q: torch.Tensor, k: torch.Tensor, causal: bool = True, normalize: str = "none") -> torch.Tensor:
    """σ(q k^T/√d) with the causal mask multiplied in: q (B,H,T,d), k (B,H,S,d) -> (B,H,T,S)."""
    check_choice("normalize", normalize, NORMALIZERS)
    t, s = q.shape[-2], k.shape[-2]
    w = torch.sigmoid(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]))
    if causal:
        w = w * causal_mask(s, q.device)[s - t :].to(w.dtype)
    return NORMALIZERS[normalize](w)


def sigmoid_attention(q, k, v, causal: bool = True, normalize: str = "none") -> torch.Tensor:
    """Sigmoid attention output (B,H,T,d)."""
    return sigmoid_weights(q, k, causal, normalize) @ v


class SigmoidAttention(MultiHeadAttention):
    """Multi-head sigmoid attention; ``normalize`` is "none" (Gu et al.'s sink-free variant) or "sum"."""

    def __init__(self, d_model: int, n_heads: int, normalize: str = "none", causal: bool = True):
        super().__init__(d_model, n_heads, causal)
        check_choice("normalize", normalize, NORMALIZERS)
        self.normalize = normalize

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        q, k, v = self.heads(x)
        w = sigmoid_weights(q, k, self.causal, self.normalize)
        y = self.out(merge_heads(w @ v))
        return (y, w) if return_weights else y
