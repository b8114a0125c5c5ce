"""Streaming per-head probes, chosen by name from a registry (``make_probe``)."""
from __future__ import annotations

from .base import FAST_STATS, Probe
from .distance import DistanceProbe
from .entropy import EntropyProbe
from .group_share import GroupShareProbe
from .induction import InductionProbe, induction_scores
from .prev_token import PrevTokenProbe
from .sink import SinkProbe, SinkRateProbe

#: query-only metrics computable on any text, name -> factory
REGISTRY = {
    "sink": SinkProbe,
    "sink_rate": SinkRateProbe,
    "entropy": EntropyProbe,
    "prev_token": PrevTokenProbe,
    "distance": DistanceProbe,
}


def make_probe(name: str) -> Probe:
    try:
        return REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown probe {name!r}: known probes are {sorted(REGISTRY)}") from None


__all__ = ["FAST_STATS", "Probe", "REGISTRY", "make_probe", "SinkProbe", "SinkRateProbe", "EntropyProbe",
           "PrevTokenProbe", "DistanceProbe", "GroupShareProbe", "InductionProbe", "induction_scores"]
