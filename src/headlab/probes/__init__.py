"""Streaming per-head probes. The head metrics are registered by name in ``REGISTRY`` (the engine's
probe registry, so ``attach(model, probes=["sink"])`` finds them); each class carries its formula,
paper and role rule (``Probe.formula``, ``.paper``, ``.role``), which scan, atlas, CLI and report read.

Probes with ``protocol is None`` run on any text and build from their name (``make_probe``);
``induction`` and ``retrieval`` need their own inputs (:mod:`headlab.measure.induction`,
:mod:`headlab.measure.retrieval`). Plug-ins never run a model themselves.
"""

from __future__ import annotations

from ..engine.plugins import PROBES, make_probe, query_probe_names
from .base import FAST_STATS, Probe, RoleRule
from .custom import MeanProbe, mean
from .distance import DistanceProbe
from .entropy import EntropyProbe
from .fai import FaiProbe
from .global_sink import GlobalSinkProbe
from .group_share import GroupShareProbe
from .head_map import HeadMapProbe
from .induction import InductionProbe
from .magnet import MagnetProbe
from .prev_token import PrevTokenProbe
from .retrieval import ArgmaxProbe, RetrievalProbe
from .sink import SinkProbe, SinkRateProbe
from .waad import WaadProbe

#: the head metrics by name, in the order scans list them
REGISTRY = PROBES
for _cls in (SinkProbe, SinkRateProbe, EntropyProbe, PrevTokenProbe, DistanceProbe, InductionProbe, RetrievalProbe):
    REGISTRY.register(_cls.name, _cls)
# per-token analyses (arXiv 2510.13554 WAAD/FAI; 2509.22650 RefAM magnets and global sinks); docs/probes.md
for _cls in (WaadProbe, FaiProbe, MagnetProbe, GlobalSinkProbe):
    REGISTRY.register(_cls.name, _cls)
del _cls


def metric_info(name: str) -> type[Probe]:
    """The probe class of a head metric (its ``formula``, ``paper``, ``role``, ``protocol``)."""
    return REGISTRY.get(name)


def role_rules() -> dict[str, tuple[str, RoleRule]]:
    """``{role: (metric, rule)}`` for every registered metric that gives a role, by ``rule.rank``."""
    found = [
        (cls.role.rank, i, cls.role.role, name, cls.role)
        for i, (name, cls) in enumerate(REGISTRY.items())
        if cls.role is not None
    ]
    return {role: (name, rule) for _, _, role, name, rule in sorted(found)}


__all__ = [
    "FAST_STATS",
    "Probe",
    "RoleRule",
    "REGISTRY",
    "make_probe",
    "query_probe_names",
    "metric_info",
    "role_rules",
    "SinkProbe",
    "SinkRateProbe",
    "EntropyProbe",
    "PrevTokenProbe",
    "DistanceProbe",
    "GroupShareProbe",
    "HeadMapProbe",
    "InductionProbe",
    "RetrievalProbe",
    "ArgmaxProbe",
    "WaadProbe",
    "FaiProbe",
    "MagnetProbe",
    "GlobalSinkProbe",
    "MeanProbe",
    "mean",
]
