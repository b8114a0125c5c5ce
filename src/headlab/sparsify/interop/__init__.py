"""Plans in and out of other tools: a headlab plan as a kvpress press (NVIDIA's kvpress; ``press.py`` runs in
kvpress's venv, ``export`` writes its spec) and DuoAttention's published head patterns (arXiv 2410.10819) to and
from headlab plans (``duo``)."""

from __future__ import annotations

from .duo import full_heads, plan_from_duo, read_duo_pattern, write_duo_pattern
from .export import PRESS_FILE, press_spec, write_press
from .press import HeadPlanPress, band, kept_range

__all__ = [
    "PRESS_FILE",
    "HeadPlanPress",
    "band",
    "full_heads",
    "kept_range",
    "plan_from_duo",
    "press_spec",
    "read_duo_pattern",
    "write_duo_pattern",
    "write_press",
]
