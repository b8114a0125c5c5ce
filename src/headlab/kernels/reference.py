"""Dense masked attention, the plain reference every sparse kernel is tested against."""

from __future__ import annotations

import math

import torch

from ..patterns.base import Pattern


def pattern_mask(pattern: Pattern, q, k, causal: bool = True) -> torch.Tensor:
    """bool (B|1, H|1, T, S) mask of ``pattern`` for q (B,H,T,d), k (B,Hkv,S,d); queries are the last T."""
    H, T, S = q.shape[1], q.shape[2], k.shape[2]
    q_pos, k_pos = torch.arange(S - T, S), torch.arange(S)
    if pattern.dynamic:
        m = pattern.select(q, k, q_pos, k_pos)
    else:
        pattern.check(T, S)
        p = pattern.for_heads(H, k.shape[1])
        m = p.mask_rows(q_pos, k_pos, S).unsqueeze(0)
    if causal:
        m = m & (k_pos.view(1, 1, 1, -1) <= q_pos.view(1, 1, -1, 1))
    return m.to(q.device)


def masked_attention(q, k, v, mask: torch.Tensor | None, scale: float | None = None) -> torch.Tensor:
    """softmax(q·kᵀ·scale masked) · v, naive. q (B,H,T,d), k/v (B,Hkv,S,d), mask bool broadcastable to
    (B,H,T,S), True = attend. Rows with no allowed key give 0."""
    B, H, T, d = q.shape
    G = H // k.shape[1]
    k = k.repeat_interleave(G, 1)
    v = v.repeat_interleave(G, 1)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return p @ v


def reference_sparse_attend(q, k, v, pattern: Pattern, scale=None, causal: bool = True) -> torch.Tensor:
    """Dense reference of ``sparse_attend``: materialises the full (B,H,T,S) mask."""
    return masked_attention(q, k, v, pattern_mask(pattern, q, k, causal), scale)
