"""FlexAttention backend (torch.nn.attention.flex_attention) for static patterns.

The pattern's element-wise rule becomes the ``mask_mod``; the block mask is cached on the pattern
and the compiled kernel is shared process-wide. On CPU FlexAttention only runs under
torch.compile (first call 15-30 s here), inference only.
"""

from __future__ import annotations

import time

import torch

from ..patterns.base import Pattern

_COMPILED = None
COMPILE_SECONDS: list[float] = []


def _flex():
    global _COMPILED
    if _COMPILED is None:
        from torch.nn.attention.flex_attention import flex_attention

        _COMPILED = torch.compile(flex_attention, dynamic=False)
    return _COMPILED


def block_mask(pattern: Pattern, T: int, S: int, n_heads: int, n_kv_heads: int, causal: bool, block: int = 128, device="cpu"):
    from torch.nn.attention.flex_attention import create_block_mask

    key = ("flex", T, S, n_heads, n_kv_heads, causal, block, str(device))
    cache = pattern.__dict__.setdefault("_plan_cache", {})
    if key in cache:
        return cache[key]
    p = pattern.for_heads(n_heads, n_kv_heads)
    off = S - T

    def mask_mod(b, h, qi, kj):
        i = qi + off
        m = p.rule(h, i, kj, S)
        return (m & (kj <= i)) if causal else m

    bm = create_block_mask(mask_mod, None, p.heads if p.n_heads else None, T, S, device=device, BLOCK_SIZE=block)
    cache[key] = bm
    return bm


def flex_attend(q, k, v, pattern: Pattern, scale: float, causal: bool, block: int = 128) -> torch.Tensor:
    B, H, T, d = q.shape
    bm = block_mask(pattern, T, k.shape[2], H, k.shape[1], causal, block, q.device)
    fn = _flex()
    t0 = time.perf_counter()
    out = fn(q, k, v, block_mask=bm, scale=scale, enable_gqa=k.shape[1] != H)
    COMPILE_SECONDS.append(time.perf_counter() - t0)
    return out
