"""Who a per-head plan is, for the evaluation: a label for tables and plots, and an identity
(name, method, budget and a hash of its per-head entries) that keys its logged trials, so that
``--resume`` never mixes two plans that share a name but assign different patterns.

A plan here is what ``headlab.patterns.headplan.load_plan`` returns: a mapping {layer: pattern}
with ``.meta`` (the JSON's fields) and ``.entries`` (the raw per-head pattern specs), e.g. a
DuoAttention (arXiv 2410.10819) or MoA (arXiv 2406.14909) plan.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def is_plan(x) -> bool:
    """True for a per-head plan (has ``.entries`` and ``.meta``), False for a Pattern or None."""
    return x is not None and hasattr(x, "entries") and hasattr(x, "meta")


def entries_hash(plan) -> str:
    """16 hex digits: sha256 of the plan's per-head entries as canonical JSON."""
    text = json.dumps(plan.entries, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity(plan) -> str:
    """'name|method|budget|hash' (empty name when the plan has none)."""
    m = plan.meta
    return f"{m.get('name') or ''}|{m.get('method', '?')}|{m.get('budget', '?')}|{entries_hash(plan)}"


def summary(plan, source: str | None = None) -> dict:
    """The plan's meta without its per-head tables, plus its hash and where it came from."""
    out = {k: v for k, v in dict(plan.meta).items() if k not in ("layers", "scores")}
    out["hash"] = entries_hash(plan)
    if source is not None:
        out["source"] = str(source)
    return out


def label(plan, source: str | None = None, taken: set[str] | frozenset = frozenset()) -> str:
    """A short unique label: the plan's name, else the file's stem, else 'method@budget'."""
    m = plan.meta
    base = m.get("name") or None
    if not base and source is not None and Path(str(source)).suffix == ".json":
        base = Path(str(source)).stem
    if not base:
        base = f"{m.get('method', 'plan')}@{m.get('budget', '?')}"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}#{k}", k + 1
    return out
