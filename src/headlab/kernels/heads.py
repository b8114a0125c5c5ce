"""Heterogeneous heads: split a layer's heads by their band and run each group on its own kernel.

A per-head plan (DuoAttention-style "retrieval heads full, streaming heads sink + window"; MoA's
per-head elastic spans, arXiv 2406.14909) mixes full causal heads with narrow bands. Computing
them together makes every head pay for the widest head's keys. Here each head's pattern is
reduced to a band ``(sink, width)`` at the current length, or ``FULL``; heads with the same band
form a group; full heads go through one SDPA call on just their heads (under GQA only their KV
heads), band heads through ``band_attend``; results are scattered back into (B, H, T, d).
Patterns that are not bands (power, strided, halo, ...) return None and keep the gather path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..patterns.base import Pattern
from ..patterns.causal import Causal
from ..patterns.compose import PerHead
from ..patterns.moa import MoA
from ..patterns.window import SinkWindow, Window
from .band import band_attend

#: a head that sees every causal key
FULL = None


def band_of(p: Pattern, S: int):
    """(sink, width) of a single-head pattern at S keys, ``FULL`` when it keeps every causal key,
    or ``False`` when it is not a band."""
    if type(p) is Causal:
        return FULL
    if type(p) is Window:
        sink, width = 0, p.size
    elif type(p) is SinkWindow:
        sink, width = p.sink, p.size
    elif type(p) is MoA and p.n_heads == 1:
        sink, width = p.sink, int(p.widths(S)[0])
    else:
        return False
    return _band(sink, width, S)


def _band(sink: int, width: int, S: int):
    if sink + width >= S:  # row S-1 sees keys 0..sink-1 and S-width..S-1: everything
        return FULL
    return (int(sink), int(width))


@dataclass(frozen=True)
class HeadBands:
    """bands[h]: FULL or (sink, width) of head h; kv: h counts KV heads (else query heads)."""

    bands: tuple
    kv: bool

    def groups(self) -> dict:
        """{band: [head, ...]} in first-seen order."""
        out: dict = {}
        for h, b in enumerate(self.bands):
            out.setdefault(b, []).append(h)
        return out

    def backend(self) -> str:
        names = sorted({"sdpa" if b is FULL else "band" for b in self.bands})
        return "+".join(names)


def head_bands(pattern: Pattern, H: int, Hkv: int, S: int) -> HeadBands | None:
    """The band of every head of ``pattern`` at S keys, or None when some head is not a band."""
    if pattern.dynamic:
        return None
    if not pattern.n_heads or (pattern.n_heads == 1 and not pattern.kv_per_head):  # one rule for every head
        b = band_of(pattern.patterns[0] if isinstance(pattern, PerHead) else pattern, S)
        return None if b is False else HeadBands((b,), True)
    if isinstance(pattern, MoA):
        bands = [_band(pattern.sink, int(w), S) for w in pattern.widths(S)]
    elif isinstance(pattern, PerHead):
        bands = [band_of(p, S) for p in pattern.patterns]
    else:
        return None
    if any(b is False for b in bands):
        return None
    n = len(bands)
    if pattern.kv_per_head:
        if n != Hkv:
            raise ValueError(f"{pattern.describe()} is defined per KV head with {n} heads, but k/v have {Hkv} heads")
        return HeadBands(tuple(bands), True)
    if n != H:
        raise ValueError(f"{pattern.describe()} has {n} heads, but q has {H} query heads")
    G = H // Hkv
    if all(len(set(bands[g * G : (g + 1) * G])) == 1 for g in range(Hkv)):  # constant within each KV group
        return HeadBands(tuple(bands[::G]), True)
    return HeadBands(tuple(bands), False)


def sdpa_causal(q, k, v, scale: float) -> torch.Tensor:
    """Causal SDPA, queries the last T of S keys; K/V repeated to the query heads under GQA."""
    G = q.shape[1] // k.shape[1]
    T, S = q.shape[2], k.shape[2]
    kr, vr = (k, v) if G == 1 else (k.repeat_interleave(G, 1), v.repeat_interleave(G, 1))
    if T == S:
        return F.scaled_dot_product_attention(q, kr, vr, is_causal=True, scale=scale)
    mask = torch.arange(S, device=q.device).view(1, -1) <= torch.arange(S - T, S, device=q.device).view(-1, 1)
    return F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask, scale=scale)


def _run(band, q, k, v, scale, block):
    if band is FULL:
        return sdpa_causal(q, k, v, scale)
    return band_attend(q, k, v, band[0], band[1], scale, block)


def split_attend(q, k, v, hb: HeadBands, scale: float, block: int | None = None) -> torch.Tensor:
    """q (B,H,T,d), k (B,Hkv,S,d), v (B,Hkv,S,dv) -> (B,H,T,dv), each head group on its own kernel."""
    B, H, T, _ = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    groups = hb.groups()
    if len(groups) == 1:
        return _run(next(iter(groups)), q, k, v, scale, block)
    out = q.new_empty(B, H, T, v.shape[-1])
    for band, heads in groups.items():
        if hb.kv:
            kv = torch.tensor(heads, device=q.device)
            qh = (kv.view(-1, 1) * G + torch.arange(G, device=q.device)).reshape(-1)
        else:
            qh = torch.tensor(heads, device=q.device)
            kv = torch.div(qh, G, rounding_mode="floor")
        out[:, qh] = _run(band, q[:, qh], k[:, kv], v[:, kv], scale, block)
    return out
