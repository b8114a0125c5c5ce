"""Attention maps for the report, computed on a model: one forward pass per text with head-map probes
attached (:class:`headlab.probes.head_map.HeadMapProbe`); the report (:mod:`headlab.report`) only draws them.

``write_html_report(out_dir, model=..., tokenizer=..., texts=...)`` writes a scan folder's ``index.html`` with
maps computed here; without a model, :func:`headlab.report.html.render_report` draws the page alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.hf import attach
from ..probes.head_map import HeadMapProbe
from ..report.html import render_report
from ..report.maps import MapPlan, TextMaps, display_tokens, text_ids
from .stats import check_input, forward_for_attention


def compute_text_maps(model, tokenizer, text: dict[str, Any], plan: MapPlan, *, edits=(), pattern=None) -> TextMaps:
    """One forward pass of ``text`` ({"name", "text", "ids"?}) with head-map probes attached."""
    import torch

    ids = text.get("ids")
    if ids is None:
        ids = text_ids(tokenizer, text)
    if not ids:
        raise ValueError(f"text {text['name']!r} has no tokens")
    probes = []
    if plan.detail:
        probes.append(HeadMapProbe(plan.detail, px=plan.px, topk=plan.topk, name="head_map_detail"))
    if plan.overview:
        probes.append(HeadMapProbe(plan.overview, px=plan.overview_px, topk=0, name="head_map_overview"))
    out = TextMaps(text["name"], display_tokens(tokenizer, ids))
    if not probes:
        return out
    x = torch.tensor([ids], dtype=torch.long)
    check_input(model, x)
    with torch.inference_mode(), attach(model, probes=probes, edits=list(edits), pattern=pattern):
        forward_for_attention(model, x)
    if plan.detail:
        out.detail = probes[0].maps()
    if plan.overview:
        out.overview = probes[-1].maps()
    return out


@dataclass
class ModelMaps:
    """A :class:`headlab.report.maps.MapSource` that runs ``model`` (with ``edits`` / ``pattern`` attached, so
    maps show the edited model)."""

    model: Any
    tokenizer: Any
    edits: Any = ()
    pattern: Any = None

    def token_ids(self, text: dict[str, Any]) -> list[int]:
        return text_ids(self.tokenizer, text)

    def maps(self, text: dict[str, Any], plan: MapPlan) -> TextMaps:
        return compute_text_maps(self.model, self.tokenizer, text, plan, edits=self.edits, pattern=self.pattern)


def write_html_report(out_dir: str | Path, *, model=None, tokenizer=None, edits=(), pattern=None, **kw) -> Path:
    """``out_dir/index.html`` of a scan folder (see :func:`headlab.report.html.render_report` for ``kw``), with
    attention maps computed on ``model`` when one is given (it needs ``tokenizer``)."""
    if model is not None and tokenizer is None:
        raise ValueError("write_html_report: a tokenizer is required with a model (to tokenise texts and label tokens)")
    source = ModelMaps(model, tokenizer, edits, pattern) if model is not None else None
    return render_report(out_dir, source=source, **kw)
