"""Head roles from probe results. A head may have several roles; thresholds are documented and
overridable (``ROLE_RULES``). Metrics missing from a scan simply give no role of that kind.

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

ROLE_RULES: dict[str, str] = {
    "sink": "sink >= 0.3",
    "previous-token": "prev_token >= 0.4",
    "induction": "induction >= 0.3",
    "retrieval": "retrieval > 0.1",
    "local": "distance <= 4 and sink < 0.3",
    "broad": "entropy >= 0.6 * uniform_entropy",
}


def _val(stats: Mapping[str, torch.Tensor], name: str, layer: int, head: int) -> float | None:
    t = stats.get(name)
    if t is None:
        return None
    v = float(t[layer, head])
    return None if math.isnan(v) else v


def head_roles(stats: Mapping[str, torch.Tensor], layer: int, head: int, uniform_entropy: float | None = None) -> list[str]:
    v = {m: _val(stats, m, layer, head) for m in ("sink", "prev_token", "induction", "retrieval", "distance", "entropy")}
    roles = []
    if v["sink"] is not None and v["sink"] >= 0.3:
        roles.append("sink")
    if v["prev_token"] is not None and v["prev_token"] >= 0.4:
        roles.append("previous-token")
    if v["induction"] is not None and v["induction"] >= 0.3:
        roles.append("induction")
    if v["retrieval"] is not None and v["retrieval"] > 0.1:
        roles.append("retrieval")
    if v["distance"] is not None and v["distance"] <= 4 and (v["sink"] is None or v["sink"] < 0.3):
        roles.append("local")
    if v["entropy"] is not None and uniform_entropy and v["entropy"] >= 0.6 * uniform_entropy:
        roles.append("broad")
    return roles


def records(stats: Mapping[str, torch.Tensor], uniform_entropy: float | None = None) -> list[dict]:
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
            rec["roles"] = head_roles(stats, layer, head, uniform_entropy)
            out.append(rec)
    return out


def uniform_entropy(lengths: list[int]) -> float:
    """Mean over causal queries of ln(number of visible keys), for texts of these lengths."""
    num = sum(math.lgamma(n + 1) for n in lengths)  # Σ_i ln(i+1) = ln(n!)
    return num / max(1, sum(lengths))
