"""Named pattern presets: the patterns ``headlab sparsify eval -p NAME`` runs, sized for SmolLM2
(30 layers, 9 query / 3 KV heads), and the head-blind control they are compared with, a
StreamingLLM sink + window (Xiao et al., arXiv 2309.17453) of matched density.

``PRESETS`` is one registry next to ``PATTERNS``: each preset is a ``PATTERNS`` name plus its
arguments, built by :func:`preset`. Families: window / sink_window (StreamingLLM), power
(PowerAttention, arXiv 2503.03588), strided (S2-Attention, arXiv 2407.17678), moa (MoA, arXiv
2406.14909), halo (HaloNet, arXiv 2103.12731), neighborhood (neighbourhood attention, arXiv
2204.07143), topk_blocks (a training-free Landmark Attention stand-in, arXiv 2305.16300) and dhsa
(DHSA, arXiv 2510.24606).

``matched_window(density, n)`` is the sink_window(SINK, w) whose density at length n is closest to
``density`` (a pattern's ``nominal_density(n)``), by bisection on the closed form
``sink_window_density``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..engine.plugins import PATTERNS
from ..registry import Registry
from .base import Pattern
from .window import sink_window

#: attention-sink tokens of the sink_window presets and of the matched-density control
SINK = 64

#: preset name -> (``PATTERNS`` name, keyword arguments)
PRESETS: Registry[tuple[str, dict[str, Any]]] = Registry(
    "pattern preset",
    {
        "window": ("window", {"size": 512}),
        "sink_window": ("sink_window", {"sink": SINK, "size": 512}),
        "power": ("power", {"block": 64, "window_blocks": 4, "sink_blocks": 1}),
        "strided": ("strided", {"block": 64, "local_blocks": 4, "stride": 3, "n_heads": 3}),
        "moa": ("moa", {"spans": [(256, 0.0), (128, 0.125), (0, 0.25)], "sink": SINK, "kv_per_head": True}),
        "halo": ("halo", {"block": 256, "halo": 256, "causal": True}),
        "neighborhood": ("neighborhood", {"kernel": 512, "dilation": 1, "causal": True}),
        "topk_blocks": ("topk_blocks", {"block": 64, "k": 6, "sink_blocks": 1, "local_blocks": 2}),
        "dhsa": ("dhsa", {"block": 64, "topk_tokens": 512, "local_tokens": 128, "global_tokens": 64}),
    },
)


def preset(name: str) -> Pattern:
    """The pattern of preset ``name``; ValueError naming the valid presets for an unknown one."""
    if name not in PRESETS:
        raise ValueError(f"unknown pattern preset {name!r} for sparsify eval; choose one of {sorted(PRESETS)}")
    pattern, kwargs = PRESETS[name]
    return PATTERNS.get(pattern)(**copy.deepcopy(kwargs))


def nominal_density(p: Pattern, n: int) -> float:
    """``p.nominal_density(n)``: the density ``matched_window`` matches (causal pairs at length n;
    for dynamic patterns the share their key budget keeps)."""
    return p.nominal_density(n)


def sink_window_density(sink: int, size: int, n: int) -> float:
    """Density of sink_window(sink, size) among the causal pairs at length n, in closed form."""
    i = torch.arange(n, dtype=torch.float64)
    seen = torch.minimum(i + 1, torch.full_like(i, size)) + torch.clamp(
        torch.minimum(i + 1 - size, torch.full_like(i, sink)), min=0
    )
    return float(seen.sum() / (i + 1).sum())


def matched_window(density: float, n: int, sink: int = SINK) -> Pattern:
    """sink_window(sink, w) whose density at length n is closest to ``density``."""
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi) // 2
        if sink_window_density(sink, mid, n) < density:
            lo = mid + 1
        else:
            hi = mid
    return sink_window(sink, lo)


__all__ = ["SINK", "PRESETS", "preset", "nominal_density", "sink_window_density", "matched_window"]
