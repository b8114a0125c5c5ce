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
from ..probes import query_probe_names
from ..report.inline import head_view

QUERY_METRICS = tuple(query_probe_names())


class HeadStats(dict):
    """``{metric: (layers, heads) tensor}`` with a data frame (``to_frame()``, one row per head) and an
    inline notebook view (the head grid)."""

    def to_frame(self):
        """pandas DataFrame: layer, head, site, one column per metric (needs ``headlab[frames]``)."""
        return stats_frame(self)

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
