"""Head roles from probe results. A head may have several roles; the thresholds live in
``THRESHOLDS`` (pass ``thresholds=`` to override any of them). Metrics missing from a scan simply
give no role of that kind.

    sink            sink ≥ 0.3            (ε of Gu et al., arXiv 2410.10781)
    previous-token  prev_token ≥ 0.4
    induction       induction ≥ 0.3       (TransformerLens-style detector practice)
    retrieval       retrieval > 0.1       (Wu et al., arXiv 2404.15574)
    local           distance ≤ 4 tokens and sink < 0.3
    broad           entropy ≥ 0.6 × entropy of uniform attention over the same visible keys
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch

THRESHOLDS: dict[str, float] = {
    "sink": 0.3, "prev_token": 0.4, "induction": 0.3, "retrieval": 0.1, "local_distance": 4.0, "broad_fraction": 0.6,
}


def role_rules(thresholds: Mapping[str, float] | None = None) -> dict[str, str]:
    t = {**THRESHOLDS, **(thresholds or {})}
    return {
        "sink": f"sink >= {t['sink']}",
        "previous-token": f"prev_token >= {t['prev_token']}",
        "induction": f"induction >= {t['induction']}",
        "retrieval": f"retrieval > {t['retrieval']}",
        "local": f"distance <= {t['local_distance']:g} and sink < {t['sink']}",
        "broad": f"entropy >= {t['broad_fraction']} * uniform_entropy",
    }


ROLE_RULES = role_rules()


def _val(stats: Mapping[str, torch.Tensor], name: str, layer: int, head: int) -> float | None:
    t = stats.get(name)
    if t is None:
        return None
    v = float(t[layer, head])
    return None if math.isnan(v) else v


def head_roles(stats: Mapping[str, torch.Tensor], layer: int, head: int, uniform_entropy: float | None = None,
               thresholds: Mapping[str, float] | None = None) -> list[str]:
    t = {**THRESHOLDS, **(thresholds or {})}
    v = {m: _val(stats, m, layer, head) for m in ("sink", "prev_token", "induction", "retrieval", "distance", "entropy")}
    roles = []
    if v["sink"] is not None and v["sink"] >= t["sink"]:
        roles.append("sink")
    if v["prev_token"] is not None and v["prev_token"] >= t["prev_token"]:
        roles.append("previous-token")
    if v["induction"] is not None and v["induction"] >= t["induction"]:
        roles.append("induction")
    if v["retrieval"] is not None and v["retrieval"] > t["retrieval"]:
        roles.append("retrieval")
    if v["distance"] is not None and v["distance"] <= t["local_distance"] and (v["sink"] is None or v["sink"] < t["sink"]):
        roles.append("local")
    if v["entropy"] is not None and uniform_entropy and v["entropy"] >= t["broad_fraction"] * uniform_entropy:
        roles.append("broad")
    return roles


def records(stats: Mapping[str, torch.Tensor], uniform_entropy: float | None = None,
            thresholds: Mapping[str, float] | None = None) -> list[dict]:
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
