"""``sparse_attend``: pick and run a block-sparse backend for one attention call.

``sparse_attend(q, k, v, pattern, scale=None, causal=True, backend="auto")``: q (B,H,T,d),
k/v (B,Hkv,S,d) with H a multiple of Hkv; queries are the last T of S positions; returns (B,H,T,d).
Backends:
  "band"   heads that are causal windows, sink + window or MoA spans (``heads.py``): full heads
           through one SDPA call on just those heads, band heads through ``band_attend``;
  "gather" copy only the needed key blocks (any static or dynamic pattern, ``gather.py``);
  "flex"   compiled FlexAttention (static patterns only);
  "dense"  SDPA with the full boolean mask (slow on CPU; for tests and comparisons);
  "auto"   plain causal SDPA when the pattern hides nothing at these lengths; else "band" when
           every head is a band, else "gather" — and for static patterns at T >= 4096 on CPU, that
           default or FlexAttention, whichever ``autotune.choose`` measured faster (warm, median).
Dynamic patterns (topk_blocks, dhsa) always take the gather path with their data-dependent
selection. ``last_backend()`` names the backend the latest call really ran (e.g. "band+sdpa",
"flex"). Exactness against ``reference_sparse_attend`` is tested at odd sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..patterns.base import Pattern
from . import autotune
from .gather import gather_dynamic, gather_static
from .heads import FULL, head_bands, sdpa_causal, split_attend
from .plan import build_plan
from .reference import pattern_mask

BACKENDS = ("auto", "band", "gather", "flex", "dense")
DEFAULT_BLOCK = 64
_LAST: dict = {"backend": None}


def last_backend() -> str | None:
    """The backend the latest ``sparse_attend`` call in this process ran: "sdpa", "band", "band+sdpa",
    "gather", "flex" or "dense" (None before the first call)."""
    return _LAST["backend"]


def _ran(name: str) -> str:
    _LAST["backend"] = name
    return name


def _check(q, k, v):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"need q (B,H,T,d), k/v (B,Hkv,S,d); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, T, d = q.shape
    if k.shape[0] != B or k.shape[3] != d or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k {tuple(k.shape)} / v {tuple(v.shape)} do not match q {tuple(q.shape)}")
    if H % k.shape[1]:
        raise ValueError(f"query heads H={H} must be a multiple of KV heads Hkv={k.shape[1]}")
    if k.shape[2] < T:
        raise ValueError(f"queries T={T} must not exceed keys S={k.shape[2]} (queries are the last T)")


def pattern_block(pattern: Pattern) -> int:
    """Gather block size: the pattern's own block when it has one (power, strided, halo), else 64."""
    b = getattr(pattern, "block", None)
    if isinstance(b, int) and 16 <= b <= 256:
        return b
    return DEFAULT_BLOCK


def dense_attend(q, k, v, pattern: Pattern, scale: float, causal: bool) -> torch.Tensor:
    """SDPA with the full boolean mask (rows without keys -> 0)."""
    m = pattern_mask(pattern, q, k, causal)
    G = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(q, k.repeat_interleave(G, 1), v.repeat_interleave(G, 1), attn_mask=m, scale=scale)
    if not bool(m.any(-1).all()):
        out = out.masked_fill(~m.any(-1, keepdim=True), 0.0)
    return out


def sparse_attend(
    q, k, v, pattern: Pattern, scale: float | None = None, causal: bool = True, backend: str = "auto", block: int | None = None
) -> torch.Tensor:
    """Attention restricted to ``pattern``; keys no head needs are never computed. Returns (B,H,T,dv)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _check(q, k, v)
    B, H, T, d = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if backend == "dense":
        _ran("dense")
        return dense_attend(q, k, v, pattern, scale, causal)
    if pattern.dynamic:
        if backend in ("flex", "band"):
            raise ValueError(f"backend {backend!r} needs a static pattern; {pattern.describe()} is dynamic")
        sel = pattern.select_units(q, k, torch.arange(S - T, S), torch.arange(S))  # pyright: ignore[reportAttributeAccessIssue]  (dynamic patterns)
        _ran("gather")
        return gather_dynamic(q, k, v, sel, scale)
    pattern.check(T, S)
    if backend == "flex":
        from .flex import flex_attend

        _ran("flex")
        return flex_attend(q, k, v, pattern, scale, causal)
    hb = head_bands(pattern, H, Hkv, S) if backend in ("band", "auto") else None
    if backend == "band":
        if hb is None:
            raise ValueError(
                f"backend 'band' needs every head to be causal, window, sink_window or a moa span; {pattern.describe()} is not"
            )
        _ran(hb.backend())
        return split_attend(q, k, v, hb, scale, block)
    if hb is not None:  # auto, every head a band or full
        if all(b is FULL for b in hb.bands):
            _ran("sdpa")
            return sdpa_causal(q, k, v, scale)
        # band-shaped patterns (windows, sink windows, MoA spans, per-head plans) are not raced against
        # FlexAttention: the band kernel beat it or tied at 8K (docs/results/kernels.md), and building a
        # block mask for a per-head plan costs minutes per layer on CPU
        _ran(hb.backend())
        return split_attend(q, k, v, hb, scale, block)
    else:
        plan = build_plan(pattern, T, S, H, Hkv, block or pattern_block(pattern), causal, q.device)
        if backend == "auto" and _hides_nothing(plan, T, S, causal):
            _ran("sdpa")
            return _sdpa_plain(q, k, v, scale, causal)
        candidates = {"gather": lambda: gather_static(q, k, v, plan, scale)}
    if backend == "auto" and block is None and q.device.type == "cpu" and autotune.measuring(T):
        from .flex import flex_attend

        candidates["flex"] = lambda: flex_attend(q, k, v, pattern, scale, causal)
    key = (pattern.describe(), T, S, H, Hkv, q.dtype, causal)
    chosen, out = autotune.choose(key, T, candidates)
    if out is None:
        out = candidates[chosen]()
    _ran(chosen)
    return out


def _hides_nothing(plan, T: int, S: int, causal: bool) -> bool:
    """The pattern allows every (causal) pair: plain SDPA is exact and fastest."""
    total = T * (S - T) + T * (T + 1) / 2 if causal else T * S
    return plan.pairs == total and not plan.empty_rows


def _sdpa_plain(q, k, v, scale, causal):
    if causal:
        return sdpa_causal(q, k, v, scale)
    G = q.shape[1] // k.shape[1]
    kr, vr = (k, v) if G == 1 else (k.repeat_interleave(G, 1), v.repeat_interleave(G, 1))
    return F.scaled_dot_product_attention(q, kr, vr, scale=scale)


def auto_backend(pattern: Pattern, T: int, S: int, n_heads: int, n_kv_heads: int, causal: bool = True) -> str:
    """The backend ``sparse_attend(..., backend="auto")`` would run for these sizes now (a measured
    choice if one is cached; otherwise the default, which a first call at T >= 4096 may still replace)."""
    if pattern.dynamic:
        return "gather"
    hb = head_bands(pattern, n_heads, n_kv_heads, S)
    if hb is not None:
        if all(b is FULL for b in hb.bands):
            return "sdpa"
        default = hb.backend()
    else:
        plan = build_plan(pattern, T, S, n_heads, n_kv_heads, pattern_block(pattern), causal)
        if _hides_nothing(plan, T, S, causal):
            return "sdpa"
        default = "gather"
    for key, dec in autotune.DECISIONS.items():
        if key[:5] == (pattern.describe(), T, S, n_heads, n_kv_heads) and key[6] == causal:
            return dec.backend
    return default
