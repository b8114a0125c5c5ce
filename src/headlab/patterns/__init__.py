"""Sparse attention patterns (HP-MASK): one factory per family, one common interface
(see ``base.Pattern``). ``REGISTRY`` maps CLI names to factories with their defaults.
"""

from __future__ import annotations

from ..engine.plugins import EXTENSIONS, PATTERNS
from .base import Pattern
from .causal import causal
from .compose import for_heads, per_head
from .dhsa import dhsa
from .groups import isolate
from .halo import halo, halo2d
from .headplan import HeadPlan, load_plan, save_plan
from .mask_mod import from_mask_mod
from .moa import moa
from .neighborhood import neighborhood, neighborhood2d
from .power import power
from .strided import strided
from .topk import topk_blocks
from .window import sink_window, window

#: the engine's pattern registry (``headlab.engine.plugins.PATTERNS``): name -> factory
REGISTRY = PATTERNS
for _name, _factory in {
    "causal": causal,
    "window": window,
    "sink_window": sink_window,
    "neighborhood": neighborhood,
    "neighborhood2d": neighborhood2d,
    "halo": halo,
    "halo2d": halo2d,
    "power": power,
    "strided": strided,
    "moa": moa,
    "isolate": isolate,
    "topk_blocks": topk_blocks,
    "dhsa": dhsa,
}.items():
    REGISTRY.register(_name, _factory)


def make(name: str, **kwargs) -> Pattern:
    """Build a pattern by registry name, e.g. ``make("power", block=64)``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown pattern {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name](**kwargs)


__all__ = [
    "Pattern",
    "REGISTRY",
    "make",
    "causal",
    "window",
    "sink_window",
    "neighborhood",
    "neighborhood2d",
    "halo",
    "halo2d",
    "power",
    "strided",
    "moa",
    "isolate",
    "topk_blocks",
    "dhsa",
    "per_head",
    "for_heads",
    "HeadPlan",
    "load_plan",
    "save_plan",
    "from_mask_mod",
]


def _engine_per_head(patterns: list, kv_per_head: bool = False):
    """The engine's per-head combinator: ``per_head`` looked up at call time (so a patched one is used)."""
    return per_head(patterns, kv_per_head=kv_per_head)


EXTENSIONS.per_head = _engine_per_head
