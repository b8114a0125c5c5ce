"""Inline notebook views (``_repr_html_``) of a scan result, a ``head_stats`` result and an ``attach`` run.

One static HTML fragment, no script: the head grid (layers x heads, coloured by one metric, role
letters in the cells, the value in each cell's tooltip) and one selected head up close (its
metrics and, when the result holds one, its block-averaged attention map with the tokens). It is
styled by the report's own stylesheet (``report/assets/report.css``, the page of ``headlab
report``) inside an ``<iframe srcdoc>``, so the notebook's own styles are untouched. Every text that
comes from data (token text, metric and role names, titles) is HTML-escaped; the map is a PNG.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..engine.plugins import EXTENSIONS
from ..engine.sites import format_site, parse_site
from ..probes.roles import role_letters, role_metrics

#: cell size of the head grid in CSS pixels
CELL = 14
#: tokens listed under a head map
MAX_TOKENS = 400


def _css() -> str:
    return resources.files("headlab.report").joinpath("assets", "report.css").read_text(encoding="utf-8")


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _hex(rgba) -> str:
    r, g, b = (int(round(255 * float(c))) for c in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def _grid(values: np.ndarray, metric: str, roles: Mapping[tuple[int, int], list[str]], selected: tuple[int, int] | None) -> str:
    """The head grid: rows = layers, columns = heads, colour = ``metric`` (viridis over its range)."""
    n_layers, n_heads = values.shape
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    cmap = matplotlib.colormaps["viridis"]
    letters = role_letters()
    cells = []
    for l in range(n_layers):
        for h in range(n_heads):
            v = float(values[l, h])
            rs = roles.get((l, h), [])
            tip = f"{format_site(l, h)} {metric} = " + ("n/a" if not math.isfinite(v) else f"{v:.4g}")
            tip += f"; roles: {', '.join(rs)}" if rs else ""
            cls = "cell" + ("" if math.isfinite(v) else " null") + (" sel" if selected == (l, h) else "")
            style = f"width:{CELL}px;height:{CELL}px"
            if math.isfinite(v):
                x = 0.5 if hi == lo else (v - lo) / (hi - lo)
                style += f";background:{_hex(cmap(x))}"
            mark = "".join(letters.get(r, "") for r in rs)
            cells.append(f'<div class="{cls}" style="{style}" title="{_e(tip)}">{_e(mark)}</div>')
    grid = f'<div class="grid roles-grid" style="grid-template-columns:repeat({n_heads},{CELL}px)">' + "".join(cells) + "</div>"
    key = " ".join(f"{_e(letters[r])} = {_e(r)}" for r in letters)
    scale = f"{metric}: {lo:.3g} (dark) … {hi:.3g} (light)" if finite.size else f"{metric}: no values"
    return (
        f'<div class="gcard"><h3>{_e(metric)} <span class="hint">rows: layers 0..{n_layers - 1}, '
        f'columns: heads 0..{n_heads - 1}</span></h3>{grid}<p class="sub">{_e(scale)}</p>'
        f'<div class="role-key">{key}</div></div>'
    )


def _map_png(m: np.ndarray) -> str:
    """A head map as a base64 PNG data URI (log colour scale, like the report)."""
    fig = Figure(figsize=(3.2, 3.2), dpi=100)
    ax = fig.add_axes((0.12, 0.12, 0.85, 0.85))
    a = np.where(np.isfinite(m), m, 0.0)
    ax.imshow(np.log10(np.maximum(a, 1e-4)), cmap="magma", vmin=-4, vmax=0, interpolation="nearest", aspect="auto")
    ax.set_xlabel("key bin", fontsize=7)
    ax.set_ylabel("query bin", fontsize=7)
    ax.tick_params(labelsize=6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _head(
    site: tuple[int, int],
    values: Mapping[str, float],
    roles: list[str],
    head_map: Any = None,
    tokens: Sequence[str] | None = None,
    note: str = "",
) -> str:
    chips = "".join(f'<span class="chip">{_e(r)}</span>' for r in roles) or '<span class="chip none">no role</span>'
    rows = "".join(
        f'<tr><th>{_e(k)}</th><td class="num">{"n/a" if v is None or not math.isfinite(v) else f"{v:.4g}"}</td></tr>'
        for k, v in values.items()
    )
    out = [
        f'<div class="headtitle"><span class="big">{_e(format_site(*site))}</span> {chips}</div>',
        f'<table class="vals">{rows}</table>',
    ]
    if head_map is not None:
        n = int(head_map.n_tokens)
        r, c = head_map.map.shape
        out.append(
            f'<h4>attention map</h4><img alt="attention map of {_e(format_site(*site))}" '
            f'src="{_map_png(np.asarray(head_map.map))}" width="320" height="320">'
        )
        out.append(f'<p class="mapmeta" style="margin-left:0">{n} tokens in {r} x {c} bins (block means, log scale)</p>')
    if tokens:
        shown = "".join(f'<span class="tok">{_e(t)}</span> ' for t in list(tokens)[:MAX_TOKENS])
        more = f" … (+{len(tokens) - MAX_TOKENS})" if len(tokens) > MAX_TOKENS else ""
        out.append(f'<h4>tokens</h4><div class="context">{shown}{_e(more)}</div>')
    if note:
        out.append(f'<p class="note">{_e(note)}</p>')
    return '<div id="head-view">' + "".join(out) + "</div>"


def page(title: str, body: str, height: int) -> str:
    """The fragment as an isolated ``<iframe srcdoc>`` styled by the report's stylesheet."""
    doc = (
        f'<!doctype html><html><head><meta charset="utf-8"><style>{_css()}</style></head>'
        f'<body><main style="padding:8px"><section class="card"><h2>{_e(title)}</h2>{body}</section></main></body></html>'
    )
    return (
        f'<iframe srcdoc="{html.escape(doc, quote=True)}" style="width:100%;height:{int(height)}px;border:0" '
        f'title="{_e(title)}"></iframe>'
    )


def _pick(selected: Any, values: np.ndarray, metric: str, maps: Mapping[tuple[int, int], Any]) -> tuple[int, int]:
    """The head to show: the one asked for, else one with a map, else the strongest head of ``metric``."""
    if selected is not None:
        l, h = parse_site(selected)
        if not (0 <= l < values.shape[0] and 0 <= h < values.shape[1]):
            raise ValueError(f"head {selected!r} out of range: layers 0..{values.shape[0] - 1}, heads 0..{values.shape[1] - 1}")
        return l, h
    if maps:
        return next(iter(maps))
    finite = np.where(np.isfinite(values), values, -np.inf)
    higher = dict(role_metrics().values()).get(metric, True)
    idx = int(np.argmax(finite if higher else -np.where(np.isfinite(values), values, np.inf)))
    return divmod(idx, values.shape[1])


def head_view(
    stats: Mapping[str, Any],
    *,
    title: str,
    metric: str | None = None,
    head: Any = None,
    roles: Mapping[tuple[int, int], list[str]] | None = None,
    maps: Mapping[tuple[int, int], Any] | None = None,
    tokens: Sequence[str] | None = None,
) -> str:
    """The inline view of ``{metric: (layers, heads)}`` statistics (see the module doc)."""
    if not stats:
        raise ValueError("nothing to show: no statistics")
    metric = metric or next(iter(stats))
    if metric not in stats:
        raise ValueError(f"unknown metric {metric!r}: this result has {', '.join(stats)}")
    arrays = {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=float) for k, v in stats.items()}
    values = arrays[metric]
    roles = roles or {}
    maps = maps or {}
    site = _pick(head, values, metric, maps)
    per_head = {k: float(a[site]) for k, a in arrays.items()}
    note = "" if site in maps else "no attention map recorded for this head (attach a HeadMapProbe on it to see one)"
    body = (
        '<div class="grids">'
        + _grid(values, metric, roles, site)
        + _head(site, per_head, roles.get(site, []), maps.get(site), tokens if site in maps else None, note)
        + "</div>"
    )
    height = max(values.shape[0] * (CELL + 1) + 140, 560 if site in maps else 300)
    return page(title, body, height)


def scan_html(res: Any, head: Any = None, metric: str | None = None) -> str:
    """Inline view of a ``run_scan`` result (its records, roles and any head maps it kept)."""
    n_layers, n_heads = int(res.meta["n_layers"]), int(res.meta["n_heads"])
    metrics = list(res.meta["metrics"])
    stats = {m: np.full((n_layers, n_heads), np.nan) for m in metrics}
    roles: dict[tuple[int, int], list[str]] = {}
    for r in res.records:
        for m in metrics:
            if r.get(m) is not None:
                stats[m][r["layer"], r["head"]] = float(r[m])
        roles[(int(r["layer"]), int(r["head"]))] = list(r.get("roles", []))
    return head_view(
        stats,
        title=f"{res.meta.get('model', 'model')}: head atlas",
        metric=metric,
        head=head,
        roles=roles,
        maps=getattr(res, "maps", None) or {},
        tokens=getattr(res, "tokens", None),
    )


def run_html(run: Any, head: Any = None, metric: str | None = None, tokens: Sequence[str] | None = None) -> str:
    """Inline view of an ``attach`` run: its probes' statistics, and the maps of any HeadMapProbe."""
    if not run.calls or not run.probes:
        what = "no attention call went through it yet" if not run.calls else "no probes attached"
        return f"<p>headlab run: {_e(what)} ({run.calls} calls)</p>"
    stats = run.stats()
    maps: dict[tuple[int, int], Any] = {}
    for p in run.probes:
        if callable(getattr(p, "maps", None)):
            maps.update(p.maps())
    shown = {
        k: v
        for k, v in stats.items()
        if not any(getattr(p, "name", None) == k and callable(getattr(p, "maps", None)) for p in run.probes)
    }
    return head_view(
        shown or stats, title=f"headlab run ({run.calls} attention calls)", metric=metric, head=head, maps=maps, tokens=tokens
    )


EXTENSIONS.run_view = run_html
