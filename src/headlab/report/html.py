"""``DIR/index.html``: a small, self-contained, interactive head atlas of a ``headlab scan`` folder.

The page is one file: styles and script are inlined from ``report/assets/``; the data (head
records, provenance, compact head maps) sits in a ``<script type="application/json">`` block
whose ``<``, ``>`` and ``&`` are written as ``\\u003c`` etc., and every token text is rendered with
``textContent`` (or drawn on a canvas). A Content-Security-Policy allows only the page's own
script (by hash) and no network at all.

Size: maps are block-averaged and byte-encoded (see ``report.data`` / ``report.maps``), so a
SmolLM2 report at 2048 tokens stays a few MB instead of bertviz's gigabytes.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html as _html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from .data import LOG_FLOOR, PAGE_ENCODING, Scan, head_payload, load_scan, normalise_texts, site_key
from .maps import ROLE_METRIC, MapPlan, MapSource, TextMaps, plan_maps
from .png import ROLE_LETTER

#: the whole page (HTML + data) stays under this many bytes by default
DEFAULT_MAX_BYTES = 9_500_000


def _asset(name: str) -> str:
    return resources.files("headlab.report").joinpath("assets", name).read_text(encoding="utf-8")


def script_json(obj: Any) -> str:
    """JSON safe to embed in ``<script type="application/json">``: no ``<``, ``>``, ``&`` left."""
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(ch, rep)
    return s


_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data: blob:; script-src 'sha256-{script_hash}'">
<title>{title}</title>
<style>
{css}
</style>
</head>
<body>
<header class="top"><h1>headlab &middot; head atlas</h1><span class="model" id="model-name"></span>
<nav><a href="#atlas">Atlas</a><a href="#head">Head</a><a href="#compare">Compare</a><a href="#provenance">Provenance</a></nav></header>
<main>
<section class="card" id="atlas"><h2>Atlas</h2><p class="sub" id="atlas-sub"></p><div class="grids" id="atlas-grids"></div></section>
<section class="card" id="head"><h2>One head up close</h2>
<div id="head-view">
<div class="headtitle" id="head-title"></div>
<div class="toolbar" id="head-bar"></div>
<div class="headview">
<div><div class="mapbox" id="map-box"></div><div class="mapmeta" id="map-meta"></div></div>
<div><h4>metrics</h4><table class="vals" id="head-values"></table><div id="query-box"></div></div>
</div></div></section>
<section class="card" id="compare"><h2>Comparison</h2><p class="sub" id="compare-sub"></p><div class="toolbar" id="compare-bar"></div><div id="compare-body"></div></section>
<section class="card" id="provenance"><h2>Provenance</h2><table class="kv" id="prov-table"></table></section>
</main>
<div id="tip"></div>
<script type="application/json" id="headlab-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""


def render_page(payload: dict[str, Any]) -> str:
    """The complete HTML page for a payload (see ``build_payload``)."""
    js, css = _asset("report.js"), _asset("report.css")
    if any(bad in js.lower() for bad in ("<script", "</script", "<!--")) or "</style" in css.lower():
        raise ValueError("report assets must not contain '<script', '</script', '<!--' or '</style'")
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    model = str(payload.get("meta", {}).get("model") or "")
    return _TEMPLATE.format(
        script_hash=digest, title=_html.escape(f"headlab atlas — {model}"), css=css, data=script_json(payload), js=js
    )


def build_payload(scan: Scan, text_maps: list[TextMaps], plans: list[MapPlan], maps_note: str | None = None) -> dict[str, Any]:
    """Everything the page shows, JSON-ready."""
    from ..version import __version__

    nl, nh = int(scan.meta["n_layers"]), int(scan.meta["n_heads"])
    payload: dict[str, Any] = {
        "format": 1,
        "report_version": __version__,
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "meta": scan.meta,
        "metrics": scan.metrics,
        "heads": scan.heads,
        "baseline": scan.baseline,
        "maps": None,
        "maps_note": maps_note,
        "default_head": [0, 0],
        # role letters and the metric that measures each role come from the probe classes (one source)
        "roles": {"letters": dict(ROLE_LETTER), "metric_role": {m: role for role, (m, _) in ROLE_METRIC.items()}},
    }
    if text_maps:
        texts = []
        for tm in text_maps:
            heads = {site_key(l, h): head_payload(m, kind="overview") for (l, h), m in sorted(tm.overview.items())}
            heads.update({site_key(l, h): head_payload(m, kind="detail") for (l, h), m in tm.detail.items()})
            texts.append({"name": tm.name, "n_tokens": len(tm.tokens), "tokens": tm.tokens, "heads": heads})
        p = plans[0] if plans else None
        payload["maps"] = {
            "texts": texts,
            "log_floor": LOG_FLOOR,
            "encoding": PAGE_ENCODING,
            "rule": p.rule if p else "maps supplied by the caller",
            "px": p.px if p else None,
            "overview_px": p.overview_px if p else None,
            "topk": p.topk if p else None,
            "detail_order": [site_key(l, h) for l, h in (p.detail if p else sorted(text_maps[0].detail))],
        }
        # start on the most informative detailed head (plan order), else any mapped head
        order = list(p.detail) if p else []
        first = next((s for s in order if s in text_maps[0].detail), None)
        first = first or next(iter(text_maps[0].detail), None) or next(iter(text_maps[0].overview), None)
        if first is not None and 0 <= first[0] < nl and 0 <= first[1] < nh:
            payload["default_head"] = [int(first[0]), int(first[1])]
    return payload


def _named(texts: Any) -> bool:
    """True when the caller named the texts (a dict, or records with "name")."""
    if isinstance(texts, dict):
        return True
    return isinstance(texts, (list, tuple)) and any(isinstance(t, dict) and "name" in t for t in texts)


def render_report(
    out_dir: str | Path,
    *,
    source: MapSource | None = None,
    texts: Any = None,
    map_sites: Any = "auto",
    max_map_px: int = 256,
    overview_px: int = 64,
    topk: int = 8,
    map_texts: int = 1,
    max_bytes: int = DEFAULT_MAX_BYTES,
    head_maps: list[TextMaps] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` (atomically) from the scan files in ``out_dir``; return its path.

    Maps: with a ``source`` (:class:`headlab.measure.maps.ModelMaps` runs a model; ``texts``, else
    ``out_dir/texts.json``), the first ``map_texts`` texts are run once each through it; ``map_sites`` is "auto" (see
    ``report.maps``), "none", or a site selector for detail maps. ``head_maps`` supplies
    precomputed maps instead. Without either the page shows the atlas, comparison and provenance.
    """
    from ..io import atomic_write_text

    if max_bytes < 100_000:
        raise ValueError(f"max_bytes must be >= 100000 (the page itself needs ~100 kB), got {max_bytes}")
    if map_texts < 0:
        raise ValueError(f"map_texts must be >= 0, got {map_texts}")
    out_dir = Path(out_dir)
    scan = load_scan(out_dir)
    text_list = normalise_texts(texts) or scan.texts
    # plain strings get the scan's names and token counts (scan cuts each text to max_tokens)
    scanned = scan.meta.get("texts") or []
    for i, t in enumerate(text_list):
        if i < len(scanned) and isinstance(scanned[i], dict):
            if texts is not None and not _named(texts) and scanned[i].get("name"):
                t["name"] = str(scanned[i]["name"])
            if "ids" not in t and isinstance(scanned[i].get("n_tokens"), int):
                t["n_tokens"] = scanned[i]["n_tokens"]
    note = None
    plans: list[MapPlan] = []
    if head_maps is not None:
        text_maps = list(head_maps)
    elif source is not None:
        text_maps = []
        chosen = text_list[:map_texts]
        if not chosen:
            note = (
                "No attention maps: map_texts=0."
                if map_texts == 0
                else "No attention maps: no scanned text was available (pass texts= or write texts.json in the scan folder)."
            )
        base = len(render_page(build_payload(scan, [], [], None)).encode("utf-8"))
        budget = max(0, (max_bytes - base - 50_000)) // max(1, len(chosen))
        for t in chosen:
            ids = source.token_ids(t)
            t = dict(t, ids=ids)
            # the text's token strings travel too (~10 bytes per token in JSON)
            plan = plan_maps(
                scan,
                len(ids),
                map_sites=map_sites,
                max_map_px=max_map_px,
                overview_px=overview_px,
                topk=topk,
                budget_bytes=max(0, budget - 10 * len(ids)),
            )
            plans.append(plan)
            text_maps.append(source.maps(t, plan))
    else:
        text_maps = []
        note = "No attention maps: the report was written without a model (run `headlab report DIR` to compute them)."
    payload = build_payload(scan, text_maps, plans, note)
    page = render_page(payload)
    return atomic_write_text(out_dir / "index.html", page)
