"""Calibration passes: record per-head outputs o^{l,h} (before W_O) through ``headlab.attach``.

Used by mean ablation (mean over all real tokens), SITE task embeddings (mean at the last prompt
token) and the VHD context-sensitivity score (per-item outputs at the last prompt token).
"""
from __future__ import annotations

from typing import Any

import torch

from ..engine.context import AttnContext
from ..edits.base import Edit


def encode_left(tokenizer: Any, texts: list[str], max_length: int | None = None,
                return_offsets: bool = False) -> dict:
    """Left-padded batch encoding (so the last query of every row is the last column)."""
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=max_length is not None,
                        max_length=max_length, return_offsets_mapping=return_offsets)
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
        return {f"L{l}H{h}": (self.sum[(l, h)] / max(self.count[(l, h)], 1.0)).to(torch.float32)
                for (l, h) in self.sum}

    def per_item(self) -> dict[int, torch.Tensor]:
        """layer -> (N, k, d) outputs at the last prompt token, heads in ``self.sites[layer]`` order."""
        return {l: torch.cat(v) for l, v in self.items.items()}


@torch.no_grad()
def run_recorder(model: Any, tokenizer: Any, texts: list[str], rec: HeadRecorder, batch_size: int = 4,
                 max_length: int | None = 512, edits: tuple = ()) -> HeadRecorder:
    from .. import attach

    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    rec.bind(n_layers, n_heads)
    with attach(model, edits=[*edits, rec]):
        for i in range(0, len(texts), batch_size):
            enc = encode_left(tokenizer, texts[i:i + batch_size], max_length)
            model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False,
                  logits_to_keep=1)
    return rec


def record_head_outputs(model: Any, tokenizer: Any, texts: list[str], sites: Any, where: str = "all",
                        batch_size: int = 4, max_length: int | None = 512) -> dict[str, torch.Tensor]:
    """Mean head output per site: over all real tokens (``where="all"``) or at the last token."""
    rec = run_recorder(model, tokenizer, texts, HeadRecorder(sites, where), batch_size, max_length)
    if where == "all":
        return rec.means()
    out = {}
    for l, t in rec.per_item().items():
        for i, h in enumerate(rec.sites[l]):
            out[f"L{l}H{h}"] = t[:, i].mean(0)
    return out
