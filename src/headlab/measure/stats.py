"""``head_stats``: query-only per-head metrics of a model on given inputs, streaming.

The query metrics are the registered probes that run on any text (``headlab.probes.REGISTRY``
entries with ``protocol is None``: sink, sink_rate, entropy, prev_token, distance); each probe class
states its formula and paper. Positions count from each row's first real token; every metric is
averaged over all valid queries of all rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..engine.frames import stats_frame
from ..engine.hf import attach
from ..engine.view import HtmlView
from ..probes import query_probe_names
from ..report.figure import PlotFigure
from ..report.inline import head_view
from ..report.png import atlas_figure, choose_metrics

QUERY_METRICS = tuple(query_probe_names())


class HeadStats(dict):
    """``{metric: (layers, heads) tensor}`` with a data frame (``to_frame()``, one row per head), an inline
    notebook view (``show()``, the head grid) and a figure (``plot()``, one heatmap per metric). Each metric's
    formula and paper are on its probe class (``headlab.probes.REGISTRY.get(name).formula`` / ``.paper``)."""

    def to_frame(self):
        """pandas DataFrame: layer, head, site, one column per metric (needs ``headlab[frames]``)."""
        return stats_frame(self)

    def show(self, head=None, metric: str | None = None) -> HtmlView:
        """The head grid coloured by ``metric`` (default the first) and one head (``"L3H1"`` or (3, 1)) up
        close, as an :class:`~headlab.engine.view.HtmlView` (a notebook renders it; ``str(view)`` is the HTML)."""
        return HtmlView(head_view(self, title="head statistics", metric=metric, head=head))

    def plot(self, metric: str | Sequence[str] | None = None) -> PlotFigure:
        """One layer x head heatmap per metric (``metric``: a name, a comma list or a list; default all) as a
        ``matplotlib.figure.Figure`` made without pyplot."""
        metrics = choose_metrics(metric, list(self), "this head_stats result")
        grids = {m: torch.as_tensor(self[m]).detach().cpu().double() for m in metrics}
        n_layers, n_heads = next(iter(grids.values())).shape
        recs = [
            {"layer": l, "head": h, **{m: float(g[l, h]) for m, g in grids.items()}}
            for l in range(n_layers)
            for h in range(n_heads)
        ]
        return atlas_figure(recs, metrics, title="head statistics")

    def _repr_html_(self) -> str:
        return head_view(self, title="head statistics")


def check_input(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
    if input_ids.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids {tuple(input_ids.shape)}"
        )
    if input_ids.shape[1] == 0 or (attention_mask is not None and bool((attention_mask.sum(-1) == 0).any())):
        raise ValueError("empty input: every row needs at least one token")
    max_len = getattr(model.config, "max_position_embeddings", None)
    if max_len is not None and input_ids.shape[1] > max_len:
        raise ValueError(
            f"input of {input_ids.shape[1]} tokens is longer than the model's context: valid lengths are 1..{max_len}"
        )
    vocab = getattr(model.config, "vocab_size", None)
    if vocab is not None and (int(input_ids.max()) >= vocab or int(input_ids.min()) < 0):
        raise ValueError(f"token ids must lie in 0..{vocab - 1}, got range {int(input_ids.min())}..{int(input_ids.max())}")


def forward_for_attention(model, input_ids, attention_mask=None):
    """One forward pass that skips the vocabulary projection where the model allows it; the inputs
    go to the model's (first layer's) device."""
    dev = getattr(model, "device", None)
    if dev is not None:
        input_ids = input_ids.to(dev)
        attention_mask = None if attention_mask is None else attention_mask.to(dev)
    kw = {"attention_mask": attention_mask, "use_cache": False}
    base = getattr(model, "base_model", None) if hasattr(model, "lm_head") else None
    with torch.no_grad():
        if base is not None and base is not model:
            return base(input_ids=input_ids, **kw)
        return model(input_ids=input_ids, **kw)


def head_stats(
    model,
    input_ids: torch.Tensor,
    metrics: Sequence[str] = ("sink", "entropy", "prev_token", "distance"),
    attention_mask: torch.Tensor | None = None,
) -> HeadStats:
    """{metric: (layers, heads) tensor} for ``input_ids`` (B, T); pad positions (mask 0) excluded."""
    unknown = [m for m in metrics if m not in QUERY_METRICS]
    if unknown:
        raise ValueError(
            f"unknown metrics {unknown}: query metrics are {list(QUERY_METRICS)} (induction and retrieval have their own helpers)"
        )
    check_input(model, input_ids, attention_mask)
    with attach(model, probes=list(metrics)) as run:
        forward_for_attention(model, input_ids, attention_mask)
    return HeadStats(run.stats())
