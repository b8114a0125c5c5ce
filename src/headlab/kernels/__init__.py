"""Block-sparse attention execution.

``sparse_attend(q, k, v, pattern, scale=None, causal=True, backend="auto")``: q (B,H,T,d),
k/v (B,Hkv,S,d) with H a multiple of Hkv; queries are the last T of S positions; returns (B,H,T,d).
Backends: "gather" (copy only the needed key blocks), "flex" (compiled FlexAttention, static
patterns only), "auto" (gather, or — for static patterns at T >= 4096 — whichever of gather and
flex measured faster on the first call with these sizes, see ``autotune.py``), "dense" (SDPA with the full boolean mask: slow on CPU,
it falls back to the math kernel; for tests and comparisons). "auto" uses plain causal SDPA when
the pattern hides nothing at these lengths (e.g. a window longer than the sequence), else gather.
Dynamic patterns (topk_blocks, dhsa) always take the gather path with their data-dependent
selection. Exactness against ``reference_sparse_attend`` is tested at odd sizes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..patterns.base import Pattern
from .gather import gather_dynamic, gather_static
from .plan import build_plan
from .reference import masked_attention, pattern_mask, reference_sparse_attend

BACKENDS = ("auto", "gather", "flex", "dense")
DEFAULT_BLOCK = 64


def _check(q, k, v):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"need q (B,H,T,d), k/v (B,Hkv,S,d); got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    B, H, T, d = q.shape
    if k.shape != v.shape[:3] + (k.shape[3],) or k.shape[0] != B or k.shape[3] != d or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k {tuple(k.shape)} / v {tuple(v.shape)} do not match q {tuple(q.shape)}")
    if H % k.shape[1]:
        raise ValueError(f"query heads H={H} must be a multiple of KV heads Hkv={k.shape[1]}")
    if T > k.shape[2]:
        raise ValueError(f"queries T={T} must not exceed keys S={k.shape[2]} (queries are the last T)")


def pattern_block(pattern: Pattern) -> int:
    """Kernel block size: the pattern's own block when it has one (power, strided, halo), else 64."""
    b = getattr(pattern, "block", None)
    if isinstance(b, int) and 16 <= b <= 256:
        return b
    return DEFAULT_BLOCK


def dense_attend(q, k, v, pattern: Pattern, scale: float, causal: bool) -> torch.Tensor:
    """SDPA with the full boolean mask (rows without keys -> 0)."""
    m = pattern_mask(pattern, q, k, causal)
    G = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(q, k.repeat_interleave(G, 1), v.repeat_interleave(G, 1),
                                         attn_mask=m, scale=scale)
    if not bool(m.any(-1).all()):
        out = out.masked_fill(~m.any(-1, keepdim=True), 0.0)
    return out


def sparse_attend(q, k, v, pattern: Pattern, scale: float | None = None, causal: bool = True,
                  backend: str = "auto", block: int | None = None) -> torch.Tensor:
    """Attention restricted to ``pattern``; empty key blocks are skipped. Returns (B,H,T,d)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _check(q, k, v)
    B, H, T, d = q.shape
    S = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if backend == "dense":
        return dense_attend(q, k, v, pattern, scale, causal)
    if pattern.dynamic:
        if backend == "flex":
            raise ValueError(f"backend 'flex' needs a static pattern; {pattern.describe()} is dynamic")
        sel = pattern.select_units(q, k, torch.arange(S - T, S), torch.arange(S))
        return gather_dynamic(q, k, v, sel, scale)
    pattern.check(T, S)
    if backend == "flex":
        from .flex import flex_attend
        return flex_attend(q, k, v, pattern, scale, causal)
    plan = build_plan(pattern, T, S, H, k.shape[1], block or pattern_block(pattern), causal, q.device)
    if backend == "auto" and _hides_nothing(plan, T, S, causal):
        return _sdpa_plain(q, k, v, scale, causal)
    if backend == "auto" and block is None and q.device.type == "cpu":
        from .autotune import choose
        from .flex import flex_attend

        key = (pattern.describe(), T, S, H, k.shape[1], q.dtype, causal)
        chosen, out = choose(key, T, lambda: gather_static(q, k, v, plan, scale),
                             lambda: flex_attend(q, k, v, pattern, scale, causal))
        if out is not None:
            return out
        if chosen == "flex":
            return flex_attend(q, k, v, pattern, scale, causal)
    return gather_static(q, k, v, plan, scale)


def _hides_nothing(plan, T: int, S: int, causal: bool) -> bool:
    """The pattern allows every (causal) pair: plain SDPA is exact and fastest."""
    total = T * (S - T) + T * (T + 1) / 2 if causal else T * S
    return plan.pairs == total and not plan.empty_rows


def _sdpa_plain(q, k, v, scale, causal):
    G = q.shape[1] // k.shape[1]
    T, S = q.shape[2], k.shape[2]
    kr, vr = (k, v) if G == 1 else (k.repeat_interleave(G, 1), v.repeat_interleave(G, 1))
    if causal and T == S:
        return F.scaled_dot_product_attention(q, kr, vr, is_causal=True, scale=scale)
    mask = None
    if causal:
        mask = torch.arange(S, device=q.device).view(1, -1) <= torch.arange(S - T, S, device=q.device).view(-1, 1)
    return F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask, scale=scale)


def auto_backend(pattern: Pattern, T: int, S: int, n_heads: int, n_kv_heads: int, causal: bool = True) -> str:
    """The backend ``sparse_attend(..., backend="auto")`` uses for these sizes."""
    if pattern.dynamic:
        return "gather"
    plan = build_plan(pattern, T, S, n_heads, n_kv_heads, pattern_block(pattern), causal)
    return "sdpa" if _hides_nothing(plan, T, S, causal) else "gather"


__all__ = ["sparse_attend", "auto_backend", "reference_sparse_attend", "masked_attention", "pattern_mask", "dense_attend",
           "build_plan", "BACKENDS"]
