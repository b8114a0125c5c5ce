"""Head roles from probe results. A head may have several roles. Each role, its metric and its
default threshold come from the probe classes (``Probe.role``, see :mod:`headlab.probes`); pass
``thresholds={metric or role: value}`` to override any of them. Metrics missing from a scan simply
give no role of that kind. ``role_rules()`` gives the rules in words (they are written into each
scan's meta.json; docs/design.md tables the shipped ones).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from . import role_rules as _probe_roles

#: reference values a relative rule may scale its threshold by
REFERENCES = ("uniform_entropy",)


def _thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    """{role: threshold}: the probe defaults, overridden by ``thresholds`` keyed by metric or role name."""
    rules = _probe_roles()
    by_metric = {metric: role for role, (metric, _) in rules.items()}
    out = {role: rule.threshold for role, (_, rule) in rules.items()}
    for key, value in (thresholds or {}).items():
        role = key if key in out else by_metric.get(key)
        if role is None:
            raise ValueError(f"unknown threshold {key!r}: give a metric ({', '.join(by_metric)}) or a role ({', '.join(out)})")
        out[role] = float(value)
    return out


def role_rules(thresholds: Mapping[str, float] | None = None) -> dict[str, str]:
    """{role: rule in words}, e.g. {"sink": "sink >= 0.3", ...}, as written into meta.json."""
    t = _thresholds(thresholds)
    return {role: rule.describe(metric, t[role]) for role, (metric, rule) in _probe_roles().items()}


def role_metrics() -> dict[str, tuple[str, bool]]:
    """{role: (metric that measures it, True when larger values are stronger)}."""
    return {role: (metric, rule.higher_is_stronger) for role, (metric, rule) in _probe_roles().items()}


def role_letters() -> dict[str, str]:
    """{role: one-letter mark} for plots and tables."""
    return {role: rule.letter for role, (_, rule) in _probe_roles().items()}


ROLE_RULES = role_rules()


def _val(stats: Mapping[str, torch.Tensor], name: str, layer: int, head: int) -> float | None:
    t = stats.get(name)
    if t is None:
        return None
    v = float(t[layer, head])
    return None if math.isnan(v) else v


def head_roles(
    stats: Mapping[str, torch.Tensor],
    layer: int,
    head: int,
    uniform_entropy: float | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> list[str]:
    """Roles of one head, in registry order; rules with ``unless`` are applied after the others."""
    t = _thresholds(thresholds)
    refs = {"uniform_entropy": uniform_entropy}
    rules = _probe_roles()
    have: dict[str, bool] = {}
    for role, (metric, rule) in sorted(rules.items(), key=lambda kv: kv[1][1].unless is not None):
        ok = rule.holds(_val(stats, metric, layer, head), t[role], refs.get(rule.relative_to or ""))
        have[role] = ok and not (rule.unless is not None and have.get(rule.unless, False))
    return [role for role in rules if have[role]]


def records(
    stats: Mapping[str, torch.Tensor], uniform_entropy: float | None = None, thresholds: Mapping[str, float] | None = None
) -> list[dict]:
    """heads.json records: {"layer", "head", <metric>..., "roles"} for every head."""
    first = next(iter(stats.values()))
    L, H = first.shape
    out = []
    for layer in range(L):
        for head in range(H):
            rec: dict = {"layer": layer, "head": head}
            for name, t in stats.items():
                x = float(t[layer, head])
                rec[name] = None if math.isnan(x) else round(x, 6)
            rec["roles"] = head_roles(stats, layer, head, uniform_entropy, thresholds)
            out.append(rec)
    return out


def uniform_entropy(lengths: list[int], causal: bool = True) -> float:
    """Mean over queries of ln(number of visible keys) for texts of these lengths: ln(i+1) for
    causal query i (Σ_i ln(i+1) = ln n!), ln n for every query of a bidirectional model."""
    if causal:
        num = sum(math.lgamma(n + 1) for n in lengths)
    else:
        num = sum(n * math.log(n) for n in lengths if n > 0)
    return num / max(1, sum(lengths))
