"""Calibration passes: record per-head outputs o^{l,h} (before W_O) through ``headlab.attach``.

Used by mean ablation (mean over all real tokens, :func:`calibrate_mean_ablation`), SITE task
embeddings (mean at the last prompt token, :func:`task_embedding`) and the VHD context-sensitivity
score (per-item outputs at the last prompt token, :func:`context_sensitivity`). The edits that use
these vectors (``headlab.edits.ablate``, ``inject``, ``reinforce``) take them precomputed.
"""

from __future__ import annotations

from typing import Any

import torch

from ..edits.ablate import MeanAblate
from ..edits.base import Edit
from ..engine.context import AttnContext
from ..engine.hf import attach, model_shape
from ..engine.sites import format_site


def encode_left(tokenizer: Any, texts: list[str], max_length: int | None = None, return_offsets: bool = False) -> dict:
    """Left-padded batch encoding (so the last query of every row is the last column)."""
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        enc = tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_offsets_mapping=return_offsets,
        )
    finally:
        tokenizer.padding_side = old
    return enc


class HeadRecorder(Edit):
    """Output-stage no-op that records o for chosen sites.

    ``where="all"``: running sum / count over every real query (-> means).
    ``where="last"``: o at the last real query of each row of a prefill call, kept per item.
    """

    name = "record"

    def __init__(self, sites: Any, where: str = "all") -> None:
        super().__init__(sites)
        if where not in ("all", "last"):
            raise ValueError(f"where={where!r} must be 'all' or 'last'")
        self.where = where
        self.sum: dict[tuple[int, int], torch.Tensor] = {}
        self.count: dict[tuple[int, int], float] = {}
        self.items: dict[int, list[torch.Tensor]] = {}  # layer -> list of (B, k, d)

    def output(self, o: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        heads = self.heads_in(ctx)
        if len(heads) == 0:
            return o
        qp = ctx.query_pos  # (B, T)
        x = o[:, heads].detach().to(torch.float64)  # (B, k, T, d)
        if self.where == "all":
            w = (qp >= 0).to(x.dtype)[:, None, :, None]
            s = (x * w).sum(dim=(0, 2))  # (k, d)
            n = float(w.sum())
            for i, h in enumerate(heads.tolist()):
                key = (ctx.layer, h)
                self.sum[key] = self.sum.get(key, 0) + s[i]
                self.count[key] = self.count.get(key, 0.0) + n
        else:
            last = qp.argmax(dim=1)  # (B,)
            sel = x[torch.arange(x.shape[0]), :, last]  # (B, k, d)
            self.items.setdefault(ctx.layer, []).append(sel.to(torch.float32))
        return o

    def means(self) -> dict[str, torch.Tensor]:
        return {format_site(l, h): (self.sum[(l, h)] / max(self.count[(l, h)], 1.0)).to(torch.float32) for (l, h) in self.sum}

    def per_item(self) -> dict[int, torch.Tensor]:
        """layer -> (N, k, d) outputs at the last prompt token, heads in ``self.sites[layer]`` order."""
        return {l: torch.cat(v) for l, v in self.items.items()}


@torch.no_grad()
def run_recorder(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    rec: HeadRecorder,
    batch_size: int = 4,
    max_length: int | None = 512,
    edits: tuple = (),
) -> HeadRecorder:
    """Run ``texts`` (left-padded batches) through ``model`` with ``rec`` (after ``edits``) attached."""
    n_layers, n_heads, _ = model_shape(model)
    rec.bind(n_layers, n_heads)
    with attach(model, edits=[*edits, rec]):
        for i in range(0, len(texts), batch_size):
            enc = encode_left(tokenizer, texts[i : i + batch_size], max_length)
            model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False, logits_to_keep=1)
    return rec


def record_head_outputs(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    sites: Any,
    where: str = "all",
    batch_size: int = 4,
    max_length: int | None = 512,
) -> dict[str, torch.Tensor]:
    """Mean head output per site: over all real tokens (``where="all"``) or at the last token."""
    rec = run_recorder(model, tokenizer, texts, HeadRecorder(sites, where), batch_size, max_length)
    if where == "all":
        return rec.means()
    out = {}
    for l, t in rec.per_item().items():
        for i, h in enumerate(rec.sites[l]):
            out[format_site(l, h)] = t[:, i].mean(0)
    return out


def calibrate_mean_ablation(
    edit: MeanAblate, model: Any, tokenizer: Any, texts: list[str], batch_size: int = 4, max_length: int = 256
) -> MeanAblate:
    """Set a ``ablate(sites, mode="mean")`` edit's means: each head's output averaged over every
    real token of ``texts`` (one pass, no edit attached). Returns the edit."""
    if not isinstance(edit, MeanAblate):
        raise ValueError(f"calibrate_mean_ablation needs an ablate(..., mode='mean') edit, got {edit!r}")
    n_layers, n_heads, _ = model_shape(model)
    edit.bind(n_layers, n_heads)
    means = record_head_outputs(model, tokenizer, texts, edit.sites, where="all", batch_size=batch_size, max_length=max_length)
    return edit.set_means(means)


@torch.no_grad()
def task_embedding(
    model: Any, tokenizer: Any, icl_prompts: list[str], sites: Any = "all", batch_size: int = 4, max_length: int | None = 1024
) -> dict[str, torch.Tensor]:
    """SITE task embedding μ per site (Park & Rhee 2025): mean head output at the last token over
    ``icl_prompts``; the input of ``headlab.edits.inject``."""
    return record_head_outputs(model, tokenizer, icl_prompts, sites, where="last", batch_size=batch_size, max_length=max_length)


@torch.no_grad()
def context_sensitivity(
    model: Any,
    tokenizer: Any,
    with_context: list[str],
    without_context: list[str],
    batch_size: int = 4,
    max_length: int | None = 1024,
    distance: str = "l2",
) -> torch.Tensor:
    """VHD score (He et al., ACL 2025) for text: (L, H) mean distance between head outputs at the last
    token with vs without the context; the input of ``headlab.edits.reinforce``."""
    if len(with_context) != len(without_context) or not with_context:
        raise ValueError("context_sensitivity: need the same non-zero number of prompts with and without context")
    if distance not in ("l2", "cosine"):
        raise ValueError(f"distance={distance!r} must be 'l2' or 'cosine'")
    outs = []
    for texts in (with_context, without_context):
        rec = run_recorder(model, tokenizer, texts, HeadRecorder("all", "last"), batch_size, max_length)
        outs.append(rec.per_item())
    L, H, _ = model_shape(model)
    score = torch.zeros(L, H)
    for layer in range(L):
        a, b = outs[0][layer], outs[1][layer]  # (N, H, d)
        if distance == "l2":
            score[layer] = (a - b).norm(dim=-1).mean(0)
        else:
            score[layer] = (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).mean(0)
    return score
