"""Which heads get attention maps in the report, and computing them with the streaming engine.

Size rule ("auto"), per mapped text of N tokens, within a byte budget for all maps:

1. every head gets a *detail* map (``min(N, max_map_px)`` cells per side + top-k keys per
   query) if that fits the budget;
2. otherwise every head gets a small *overview* map (``min(N, overview_px)`` per side; halved
   down to 16 px until all heads fit in 40 % of the budget), and *detail* maps go to the most
   informative heads, in this order until the rest of the budget or ``max_detail`` is used:
   round-robin over (a) the holders of each role, strongest first, and (b) the top heads of
   each metric (lowest entropy too), then layer order.

Maps are computed by ``HeadMapProbe`` inside ``headlab.attach``: one forward pass per text, only
block sums for the selected heads are kept (never all heads × full maps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..engine.sites import parse_sites
from ..probes.head_map import HeadMap
from ..probes.roles import role_metrics
from .data import Scan, map_bytes

#: role -> (metric that measures it, True when larger is stronger), from the probe classes
ROLE_METRIC = role_metrics()


@dataclass
class MapPlan:
    detail: list[tuple[int, int]]
    overview: list[tuple[int, int]]
    px: int
    overview_px: int
    topk: int
    rule: str


@dataclass
class TextMaps:
    """Maps of one text: display tokens (one string per token) and ``{(layer, head): HeadMap}``."""

    name: str
    tokens: list[str]
    detail: dict[tuple[int, int], HeadMap] = field(default_factory=dict)
    overview: dict[tuple[int, int], HeadMap] = field(default_factory=dict)


def priority_heads(scan: Scan) -> list[tuple[int, int]]:
    """All heads, most informative first (see module docstring)."""
    recs = scan.heads

    def val(r: dict, m: str) -> float | None:
        v = r.get(m)
        return v if isinstance(v, float) and math.isfinite(v) else None

    queues: list[list[tuple[int, int]]] = []
    for role, (metric, desc) in ROLE_METRIC.items():
        holders = [r for r in recs if role in r["roles"]]
        holders.sort(key=lambda r: (val(r, metric) is None, -(val(r, metric) or 0.0) if desc else (val(r, metric) or 0.0)))
        queues.append([(r["layer"], r["head"]) for r in holders])
    for metric in scan.metrics:
        have = [r for r in recs if val(r, metric) is not None]
        queues.append([(r["layer"], r["head"]) for r in sorted(have, key=lambda r: -val(r, metric))])
        if metric == "entropy":
            queues.append([(r["layer"], r["head"]) for r in sorted(have, key=lambda r: val(r, metric))])
    out: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    depth = max((len(q) for q in queues), default=0)
    for i in range(depth):
        for q in queues:
            if i < len(q) and q[i] not in seen:
                seen.add(q[i])
                out.append(q[i])
    for r in sorted(recs, key=lambda r: (r["layer"], r["head"])):
        if (r["layer"], r["head"]) not in seen:
            seen.add((r["layer"], r["head"]))
            out.append((r["layer"], r["head"]))
    return out


def plan_maps(
    scan: Scan,
    n_tokens: int,
    *,
    map_sites: Any = "auto",
    max_map_px: int = 256,
    overview_px: int = 64,
    topk: int = 8,
    budget_bytes: int = 8_000_000,
    max_detail: int = 24,
) -> MapPlan:
    """Choose detail / overview heads for one text of ``n_tokens`` tokens within ``budget_bytes``."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    if max_map_px < 1 or overview_px < 1:
        raise ValueError(f"max_map_px and overview_px must be >= 1, got {max_map_px}, {overview_px}")
    if budget_bytes < 0:
        raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
    nl, nh = int(scan.meta["n_layers"]), int(scan.meta["n_heads"])
    all_heads = [(l, h) for l in range(nl) for h in range(nh)]
    per_detail = map_bytes(n_tokens, max_map_px, topk)
    if isinstance(map_sites, str) and map_sites == "none":
        return MapPlan([], [], max_map_px, overview_px, topk, "no maps (map_sites='none')")
    if not (isinstance(map_sites, str) and map_sites == "auto"):
        chosen = [(l, h) for l, hs in parse_sites(map_sites, nl, nh).items() for h in hs]
        rest = [s for s in all_heads if s not in set(chosen)]
        left = budget_bytes - per_detail * len(chosen)
        if left < 0:
            raise ValueError(
                f"{len(chosen)} detail maps at {n_tokens} tokens need ~{per_detail * len(chosen) / 1e6:.1f} MB, "
                f"over the budget of {budget_bytes / 1e6:.1f} MB: select fewer heads or lower max_map_px"
            )
        opx = _fit_overview(n_tokens, overview_px, len(rest), left)
        ov = rest if opx else []
        return MapPlan(
            chosen,
            ov,
            max_map_px,
            opx or overview_px,
            topk,
            f"detail maps for the requested heads ({len(chosen)})"
            + (f"; {opx}px overview maps for the other {len(ov)}" if ov else ""),
        )
    if per_detail * len(all_heads) <= budget_bytes:
        return MapPlan(
            all_heads,
            [],
            max_map_px,
            overview_px,
            topk,
            f"detail maps for all {len(all_heads)} heads (fits the {budget_bytes / 1e6:.1f} MB budget)",
        )
    opx = _fit_overview(n_tokens, overview_px, len(all_heads), int(0.4 * budget_bytes))
    order = priority_heads(scan)
    if opx:
        left = budget_bytes - map_bytes(n_tokens, opx, 0) * len(all_heads)
        n_detail = max(0, min(max_detail, left // per_detail))
        detail = order[:n_detail]
        overview = [s for s in all_heads if s not in set(detail)]
        rule = (
            f"{opx}px overview maps for all heads; detail maps ({min(n_tokens, max_map_px)}px + top-{topk} keys per query) "
            f"for {len(detail)} heads chosen round-robin from role holders and top heads of each metric"
        )
        return MapPlan(detail, overview, max_map_px, opx, topk, rule)
    n_detail = max(0, min(max_detail, budget_bytes // per_detail))
    return MapPlan(
        order[:n_detail],
        [],
        max_map_px,
        overview_px,
        topk,
        f"too many heads for overview maps; detail maps for the {n_detail} most informative heads",
    )


def _fit_overview(n_tokens: int, px: int, n_heads: int, budget: int) -> int:
    """Largest overview size (px, px/2, ... >= 16) whose maps for ``n_heads`` fit; 0 if none."""
    while True:
        if map_bytes(n_tokens, px, 0) * n_heads <= budget:
            return px
        if px <= 16:
            return 0
        px = max(16, px // 2)


def display_tokens(tokenizer, ids: list[int]) -> list[str]:
    """One display string per token id (the decoded text of that token alone)."""
    return [tokenizer.decode([int(i)]) for i in ids]


def text_ids(tokenizer, text: dict[str, Any]) -> list[int]:
    """Token ids of a text: its stored "ids", else the tokenizer's, cut to "n_tokens" (as scan does)."""
    if text.get("ids") is not None:
        return [int(i) for i in text["ids"]]
    ids = tokenizer(text["text"])["input_ids"]
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    if ids and isinstance(ids[0], list):  # batched output
        ids = ids[0]
    n = text.get("n_tokens")
    return ids[:n] if isinstance(n, int) and n > 0 else ids


class MapSource(Protocol):
    """Where a report's attention maps come from (the report only draws them): ``token_ids(text)`` gives a
    text's token ids, ``maps(text, plan)`` runs whatever model it wraps over ``text`` (with ``"ids"``) and
    returns the maps ``plan`` asks for. :class:`headlab.measure.maps.ModelMaps` is the one that runs a model."""

    def token_ids(self, text: dict[str, Any]) -> list[int]: ...

    def maps(self, text: dict[str, Any], plan: MapPlan) -> TextMaps: ...
