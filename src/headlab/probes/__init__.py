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


#: the metrics ``headlab scan`` and :func:`headlab.scan` compute when none are named, in registry order.
#: Every per-text probe among them has an exact form next to SDPA (``fast_needs``), so a default scan never
#: builds attention maps. Opt-in (``--metrics default,entropy`` or a list): ``entropy``, exact only with
#: Σ_j A_ij k_j, i.e. d more value columns in the attention call (about 1.8x its time on the CPU kernel, which
#: pads q and k to the value width); ``global_sink``, whose detection counts every weight >= tau (a blocked
#: pass over about 1/8 of the scores, arXiv 2509.22650).
DEFAULT_METRICS = ("sink", "sink_rate", "prev_token", "distance", "induction", "retrieval", "waad", "fai", "magnet")


def default_query_metrics() -> list[str]:
    """The per-text probes of :data:`DEFAULT_METRICS` (those that run on any text), in registry order."""
    return [m for m in query_probe_names() if m in DEFAULT_METRICS]


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
    "DEFAULT_METRICS",
    "default_query_metrics",
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
