"""Results as pandas data frames: one row per (layer, head).

pandas is an optional extra (``pip install "headlab[frames]"``); without it ``to_frame`` raises an
``ImportError`` that names that command. Used by ``ScanResult.to_frame()``, ``Run.to_frame()`` and
the ``head_stats`` result's ``to_frame()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .sites import format_site

INSTALL = 'pip install "headlab[frames]"'


def pandas() -> Any:
    """The pandas module, or an ImportError naming the install command."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(f"to_frame needs pandas, an optional extra of headlab: {INSTALL} (or pip install pandas)") from None
    return pd


def stats_frame(stats: Mapping[str, Any]) -> Any:
    """``{metric: (layers, heads) tensor or array}`` -> DataFrame with columns layer, head, site, metrics."""
    pd = pandas()
    if not stats:
        raise ValueError("no statistics to put in a frame: the mapping is empty")
    shapes = {name: tuple(v.shape) for name, v in stats.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(s != first for s in shapes.values()):
        raise ValueError(f"every metric must be a (layers, heads) table of the same shape, got {shapes}")
    n_layers, n_heads = first
    cols = {name: [float(x) for x in _flat(v)] for name, v in stats.items()}
    rows: dict[str, list] = {
        "layer": [l for l in range(n_layers) for _ in range(n_heads)],
        "head": [h for _ in range(n_layers) for h in range(n_heads)],
    }
    rows["site"] = [format_site(l, h) for l, h in zip(rows["layer"], rows["head"])]
    return pd.DataFrame({**rows, **cols})


def records_frame(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> Any:
    """Scan records (``{"layer", "head", metric..., "roles"}``) -> one row per head; roles as one
    space-separated string; a missing metric value is NaN."""
    pd = pandas()
    data = []
    for r in records:
        row = {"layer": int(r["layer"]), "head": int(r["head"]), "site": format_site(r["layer"], r["head"])}
        for m in metrics:
            v = r.get(m)
            row[m] = float("nan") if v is None else float(v)
        row["roles"] = " ".join(r.get("roles", []))
        data.append(row)
    return pd.DataFrame(data, columns=["layer", "head", "site", *metrics, "roles"])


def _flat(v: Any) -> list:
    if hasattr(v, "detach"):
        v = v.detach().cpu()
    return [x for row in v.tolist() for x in row]
