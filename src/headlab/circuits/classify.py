"""Circuit classes of heads from patching effects and attention evidence (Wang et al., IOI,
arXiv 2211.00593), only where the evidence supports them.

Inputs are (L, H) tensors: ``effect`` (total patching effect, normalised), ``direct`` (direct
effect on the logits), ``path_q`` (effect through the name movers' queries, path patching; NaN
where not measured), ``attn`` ({"END->IO", "END->S2", "S2->S1", "S2->S1+1", "END->ANS"}: mean
attention weight between named positions of the clean prompts), ``prev_token`` and ``induction``
(headlab's probes: ``PrevTokenProbe`` on the task prompts, ``InductionProbe`` on repeated random
tokens). Rules (thresholds in :data:`THRESHOLDS`, overridable):

  in_circuit            |effect| >= effect
  name_mover            direct >= direct, END->IO >= attend, END->IO > END->S2
  negative_name_mover   direct <= -direct, END->IO >= attend
  s_inhibition          path_q >= path, END->S2 >= END->IO   (a sender into the name movers' queries)
  induction             in_circuit, S2->S1+1 >= attend / 2, induction probe >= its role threshold
  duplicate_token       in_circuit, S2->S1 >= attend / 2
  previous_token        in_circuit, prev_token probe >= its role threshold
  mover                 (colored objects) direct >= direct, END->ANS >= attend
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..engine.sites import format_site
from ..probes import role_rules

#: the circuit thresholds; ``prev_token`` and ``induction`` are the probes' role thresholds (``Probe.role``,
#: their one home: :func:`headlab.probes.role_rules`)
THRESHOLDS = {
    "effect": 0.05,
    "direct": 0.05,
    "attend": 0.2,
    "path": 0.03,
    "prev_token": role_rules()["previous-token"][1].threshold,
    "induction": role_rules()["induction"][1].threshold,
}


def _v(t: torch.Tensor | None, l: int, h: int) -> float:
    if t is None:
        return float("nan")
    return float(t[l, h])


def _ge(x: float, thr: float) -> bool:
    return not math.isnan(x) and x >= thr


def classify(
    effect: torch.Tensor,
    direct: torch.Tensor,
    attn: Mapping[str, torch.Tensor],
    path_q: torch.Tensor | None = None,
    prev_token: torch.Tensor | None = None,
    induction: torch.Tensor | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, list[str]]:
    """{"LlHh": [roles]} for every head (possibly empty lists)."""
    t = dict(THRESHOLDS)
    for k, v in (thresholds or {}).items():
        if k not in t:
            raise ValueError(f"unknown threshold {k!r}; valid: {sorted(t)}")
        t[k] = float(v)
    L, H = effect.shape
    out: dict[str, list[str]] = {}
    for l in range(L):
        for h in range(H):
            e, d = _v(effect, l, h), _v(direct, l, h)
            a = {k: _v(v, l, h) for k, v in attn.items()}
            roles = []
            inc = _ge(abs(e), t["effect"])
            if inc:
                roles.append("in_circuit")
            if "END->IO" in a:
                if _ge(d, t["direct"]) and _ge(a["END->IO"], t["attend"]) and a["END->IO"] > a.get("END->S2", -1):
                    roles.append("name_mover")
                if _ge(-d, t["direct"]) and _ge(a["END->IO"], t["attend"]):
                    roles.append("negative_name_mover")
                if _ge(_v(path_q, l, h), t["path"]) and a.get("END->S2", 0) >= a["END->IO"]:
                    roles.append("s_inhibition")
                if inc and _ge(a.get("S2->S1+1", float("nan")), t["attend"] / 2) and _ge(_v(induction, l, h), t["induction"]):
                    roles.append("induction")
                if inc and _ge(a.get("S2->S1", float("nan")), t["attend"] / 2):
                    roles.append("duplicate_token")
            if "END->ANS" in a and _ge(d, t["direct"]) and _ge(a["END->ANS"], t["attend"]):
                roles.append("mover")
            if inc and _ge(_v(prev_token, l, h), t["prev_token"]):
                roles.append("previous_token")
            out[format_site(l, h)] = roles
    return out


def attention_between(
    weights: Mapping[int, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor, L: int, H: int
) -> torch.Tensor:
    """(L, H) mean over prompts of A[query column rows[i], key column cols[i]]; ``weights``: a
    recording {layer: (N, H, T, T)}."""
    out = torch.zeros(L, H)
    ar = torch.arange(len(rows))
    for l in range(L):
        out[l] = weights[l][ar, :, rows, cols].mean(0)  # (N, H) -> (H,)
    return out
