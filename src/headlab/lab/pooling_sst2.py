"""Experiment ``pooling-sst2``: attention-based pooling heads on a frozen encoder, SST-2 sentiment.

- AttSets (Yang et al., "Robust Attentional Aggregation of Deep Feature Sets for Multi-view 3D Reconstruction",
  IJCV 2019, arXiv 1808.00758; :class:`headlab.modules.AttSets`): per-feature softmax over the set of last-layer
  token states;
- MLTP, Multi-Layers Trainable Pooling (Tang & Yang, "Pooling and Attention: What are Effective Designs for
  LLM-Based Embedding Models?", 2024, arXiv 2409.02727; :class:`headlab.modules.MultiLayerTrainablePooling`):
  ``latents`` learned latents cross-attend to the last-token state of every layer, then a GEGLU feed-forward, the
  mean over latents, L2 normalisation;

against fixed pooling of the last layer: ``mean`` (the real tokens; all-MiniLM-L6-v2's own sentence embedding),
``cls`` (token 0), ``max`` (per feature over the real tokens) and ``last`` (the last real token, [SEP]: the
"EOS-last" design MLTP is compared with).  Every head ends in the same linear 2-way classifier and gets the same
budget: ``folds``-fold cross-fitting over the 872 sentences, ``steps`` AdamW steps of ``batch`` at ``lr``, the same
batches (:func:`headlab.lab.probing_sst2.cross_fit`).  Measured: held-out accuracy with its Wilson interval and the
exact McNemar test of each head against mean pooling on the same sentences, AttSets against max pooling, MLTP
against last-token pooling, with the paired difference MLTP − last and its 90 % bootstrap interval (an
equivalence test at 5 % when both one-sided bounds are inside the margin).

The decision rules are registered in the claims harness (``repro/headlab_repro/paper_claims.py``: ``pooling-sst2``
for AttSets, ``pooling-sst2-mltp`` for MLTP).  Shapes: tokens (B, T, 384), mask (B, T), layer states (B, 6, 384).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from headlab.modules.attsets import AttSets
from headlab.modules.mltp import MultiLayerTrainablePooling
from headlab.progress import progress_bar
from headlab.stats import paired_difference

from .config import PoolingSst2Config
from .probing_sst2 import accuracy_block, cross_fit, fold_ids, masked_mean, minilm_states, n_params, sst2_sentences
from .result import LabResult, lab_result, print_table

NAME = PoolingSst2Config.NAME
HEADS = ("mean", "cls", "max", "last", "attsets", "mltp")


class PoolHead(nn.Module):
    """Pooling ``kind`` (one of :data:`HEADS`) then a linear classifier; forward(tokens, mask, layer_states)."""

    def __init__(self, kind: str, dim: int, n_layers: int, cfg: PoolingSst2Config, n_classes: int = 2):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"pooling {kind!r}; valid: {list(HEADS)}")
        self.kind = kind
        self.attsets = AttSets(dim) if kind == "attsets" else None
        self.mltp = (
            MultiLayerTrainablePooling(n_layers, dim, cfg.latents, cfg.mltp_heads, cfg.mltp_d_head) if kind == "mltp" else None
        )
        self.head = nn.Linear(dim, n_classes)

    def pool(self, x: torch.Tensor, mask: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
        """(B, D) sentence vector."""
        if self.kind == "mean":
            return masked_mean(x, mask)
        if self.kind == "cls":
            return x[:, 0]
        if self.kind == "max":
            return x.masked_fill(~mask[..., None], float("-inf")).amax(1)
        if self.kind == "last":
            return layers[:, -1]
        if self.attsets is not None:
            return self.attsets(x, mask)
        assert self.mltp is not None
        return self.mltp(layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x, mask, layers))


def run(config: PoolingSst2Config | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Cross-fitted pooling heads on frozen MiniLM states of SST-2 (same budget for all).
    Settings: :class:`PoolingSst2Config`."""
    cfg = PoolingSst2Config.make(config, **overrides)
    if min(cfg.latents, cfg.mltp_heads, cfg.mltp_d_head) < 1:
        raise ValueError(
            f"latents, mltp_heads and mltp_d_head must be >= 1, got {cfg.latents}, {cfg.mltp_heads}, {cfg.mltp_d_head}"
        )
    texts, labels = sst2_sentences(cfg.items)
    folds = fold_ids(len(texts), cfg.folds, cfg.seed)
    with progress_bar(NAME, len(HEADS) + 1, quiet=quiet) as advance:
        st = minilm_states(texts, cfg.max_tokens)
        advance()
        x, mask, layers, y = st["tokens"], st["mask"], st["last_token"], torch.tensor(labels)
        dim, n_layers = x.shape[-1], layers.shape[1]
        preds, heads = {}, {}
        for kind in HEADS:
            make = lambda kind=kind: PoolHead(kind, dim, n_layers, cfg)  # noqa: E731
            pred, sec = cross_fit(make, (x, mask, layers), y, folds, cfg.steps, cfg.batch, cfg.lr, cfg.seed)
            preds[kind] = pred
            heads[kind] = {"params": n_params(make()), "seconds_per_step": sec}
            advance()
    y_np = y.numpy()
    correct = {k: (p == y_np).astype(np.int64) for k, p in preds.items()}
    for k in HEADS:
        heads[k]["accuracy"] = accuracy_block(correct[k], None if k == "mean" else correct["mean"])
    heads["attsets"]["vs_max"] = accuracy_block(correct["attsets"], correct["max"])
    heads["mltp"]["vs_last"] = accuracy_block(correct["mltp"], correct["last"])
    # MLTP - last-token accuracy with a paired 90 % interval: the two one-sided tests of an equivalence margin
    heads["mltp"]["diff_vs_last"] = paired_difference(correct["mltp"], correct["last"], level=0.9, seed=cfg.seed)
    measured = {"heads": heads, "items": len(texts), "layers": n_layers, "positive": int(y_np.sum())}
    records = [
        {"item": i, "label": int(y_np[i]), "fold": int(folds[i]), **{k: int(preds[k][i]) for k in HEADS}}
        for i in range(len(texts))
    ]
    res = lab_result(NAME, measured, cfg.record(), records)
    if not quiet:
        rows = [
            [k, v["accuracy"]["value"], v["accuracy"].get("mcnemar_p", float("nan")), v["params"], v["seconds_per_step"]]
            for k, v in heads.items()
        ]
        print_table(
            f"Pooling heads on frozen MiniLM, SST-2 ({len(texts)} sentences, {cfg.folds}-fold)",
            ["pooling", "accuracy", "McNemar p vs mean", "params", "s / step"],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    ax = fig.subplots(1, 1)
    h = res.measured["heads"]
    names = list(h)
    acc = [h[k]["accuracy"]["value"] for k in names]
    lo = [a - h[k]["accuracy"]["ci"][0] for a, k in zip(acc, names)]
    hi = [h[k]["accuracy"]["ci"][1] - a for a, k in zip(acc, names)]
    ax.bar(names, acc, yerr=[lo, hi], color=["C0"] * 4 + ["C1", "C2"])
    ax.set(ylabel="held-out accuracy (95% Wilson)", title="SST-2, frozen MiniLM: pooling heads", ylim=(0.4, 1.0))
