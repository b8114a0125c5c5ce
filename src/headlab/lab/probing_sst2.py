"""Experiment ``probing-sst2``: efficient probing (EP) against linear and multi-head attentive probes on frozen
MiniLM token states of SST-2 (Psomas et al., "Attention, Please! Revisiting Attentive Probing for Masked Image
Modeling", ICLR 2026, arXiv 2506.10178; official code billpsomas/efficient-probing, ``poolings/ep.py``).

The encoder is all-MiniLM-L6-v2 (``headlab.load("minilm")``, frozen); its last-layer token states X (N, T, 384)
of the 872 SST-2 validation sentences are computed once.  Probes (each ends in a linear 2-way classifier):

- ``linear_cls``: linear probing, the paper's LP, on the first ([CLS]) token;
- ``linear_mean``: linear probing on the mean of the real tokens (the encoder's own sentence embedding);
- ``mha``: multi-head attentive probing: one learned query, ``mha_heads``-head cross-attention with q, k, v and
  output projections (``torch.nn.MultiheadAttention``), the conventional attentive probe;
- ``ep``: EP (:class:`headlab.modules.EfficientProbing`): ``queries`` learned queries attend over the raw tokens
  (no key projection, one head), each aggregates its own chunk of one value projection.

Protocol: ``folds``-fold cross-fitting (every sentence is predicted once, by probes trained on the other folds), each
probe ``steps`` AdamW steps of ``batch`` sentences at ``lr`` (:mod:`headlab.modules.training`), the same folds and
batches for every probe, so the predictions are paired item by item.  Cost per probe: trainable parameters and the
forward FLOPs of one sentence at the mean real length (:func:`probe_flops`, counted from the shapes: 2 per
multiply-add), plus the measured seconds per training step.

The decision rule is registered in the claims harness (``repro/headlab_repro/paper_claims.py``, ``probing-sst2``).
The SST-2 / MiniLM helpers here (:func:`sst2_sentences`, :func:`minilm_states`, :func:`fold_ids`,
:func:`cross_fit`) serve ``pooling-sst2`` too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from headlab.modules.probing import EfficientProbing
from headlab.modules.training import adamw, step
from headlab.progress import progress_bar
from headlab.stats import mcnemar_exact, proportion

from .config import ProbingSst2Config
from .result import LabResult, lab_result, print_table

NAME = ProbingSst2Config.NAME
PROBES = ("linear_cls", "linear_mean", "mha", "ep")
#: the paper's headline (README leaderboard of the official code, ImageNet-1k top-1 on frozen MAE ViT-B/16)
PAPER_HEADLINE = {"LP": 67.8, "EP": 75.5, "speed-up over MHA probing": "up to 10x (abstract)"}


# ------------------------------------------------------------------------------------------ data and encoder
def sst2_sentences(items: int = 0) -> tuple[list[str], list[int]]:
    """The SST-2 validation sentences and labels (0 negative, 1 positive); ``items`` > 0 keeps the first ones."""
    from headlab.data.tasks.sst2 import PROMPT, load

    if items < 0:
        raise ValueError(f"items must be >= 0 (0 = all 872), got {items}")
    head, tail = PROMPT.split("{text}")
    task = load(items or None)
    texts = [it.prompt[len(head) : len(it.prompt) - len(tail)] for it in task.items]
    labels = [it.label for it in task.items]
    if any(y is None for y in labels):
        raise ValueError("SST-2 items without a label")
    return texts, [int(y) for y in labels if y is not None]


@torch.no_grad()
def minilm_states(texts: list[str], max_tokens: int, batch: int = 64) -> dict[str, torch.Tensor]:
    """Frozen all-MiniLM-L6-v2 states: ``tokens`` (N, T, 384) of the last layer, ``mask`` (N, T) bool (real tokens),
    ``last_token`` (N, 6, 384) the last real token ([SEP]) of each of the 6 layers; T = the longest sentence, at most
    ``max_tokens``."""
    from headlab.models import load

    if max_tokens < 3:
        raise ValueError(f"max_tokens must be >= 3, got {max_tokens}")
    model, tok = load("minilm")
    toks, masks, lasts = [], [], []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i : i + batch], padding="max_length", truncation=True, max_length=max_tokens, return_tensors="pt")
        out = model(**enc, output_hidden_states=True)
        hs = out.hidden_states[1:]  # the 6 transformer layers, each (b, T, 384)
        m = enc["attention_mask"].bool()
        last = m.long().sum(-1) - 1
        toks.append(hs[-1])
        masks.append(m)
        lasts.append(torch.stack([h[torch.arange(len(last)), last] for h in hs], 1))
    mask = torch.cat(masks)
    t = int(mask.sum(-1).max())
    return {"tokens": torch.cat(toks)[:, :t].contiguous(), "mask": mask[:, :t].contiguous(), "last_token": torch.cat(lasts)}


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """(n,) fold of each item: a seeded permutation dealt round-robin into ``folds`` folds."""
    if folds < 2 or folds > n:
        raise ValueError(f"folds must be in [2, n={n}], got {folds}")
    out = np.empty(n, dtype=np.int64)
    out[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return out


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (B, T, D), mask (B, T) -> mean of the real tokens (B, D)."""
    m = mask[..., None].to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1)


# ------------------------------------------------------------------------------------------ probes
class LinearProbe(nn.Module):
    """Linear classifier on one pooled vector: ``pool`` "cls" (token 0) or "mean" (real tokens)."""

    def __init__(self, dim: int, pool: str, n_classes: int = 2):
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool={pool!r}; valid: ['cls', 'mean']")
        self.pool = pool
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, 0] if self.pool == "cls" else masked_mean(x, mask))


class MHAProbe(nn.Module):
    """Multi-head attentive probe: one learned query cross-attends over the tokens (q, k, v, o projections)."""

    def __init__(self, dim: int, heads: int, n_classes: int = 2):
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"mha_heads={heads} must be >= 1 and divide the width {dim}")
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        o, _ = self.attn(self.query.expand(len(x), -1, -1), x, x, key_padding_mask=~mask, need_weights=False)
        return self.head(o[:, 0])


class EPProbe(nn.Module):
    """:class:`headlab.modules.EfficientProbing` with the (B, T) real-token mask."""

    def __init__(self, dim: int, queries: int, n_classes: int = 2):
        super().__init__()
        self.ep = EfficientProbing(dim, n_classes, n_queries=queries)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.ep(x, mask)


def make_probe(kind: str, dim: int, cfg: ProbingSst2Config) -> nn.Module:
    """A fresh probe of ``kind`` (one of :data:`PROBES`) for width ``dim``."""
    if kind == "linear_cls":
        return LinearProbe(dim, "cls")
    if kind == "linear_mean":
        return LinearProbe(dim, "mean")
    if kind == "mha":
        return MHAProbe(dim, cfg.mha_heads)
    if kind == "ep":
        return EPProbe(dim, cfg.queries)
    raise ValueError(f"probe {kind!r}; valid: {list(PROBES)}")


def probe_flops(kind: str, dim: int, n_tokens: float, cfg: ProbingSst2Config, n_classes: int = 2) -> float:
    """Forward FLOPs of one sentence of ``n_tokens`` tokens (2 per multiply-add; softmax and biases not counted)."""
    head = 2 * dim * n_classes
    if kind == "linear_cls":
        return head
    if kind == "linear_mean":
        return n_tokens * dim + head
    if kind == "mha":  # q of one query, k and v of every token, scores, weighted sum, output projection
        return 2 * dim * dim + 2 * 2 * n_tokens * dim * dim + 2 * n_tokens * dim + 2 * n_tokens * dim + 2 * dim * dim + head
    if kind == "ep":  # M queries x tokens scores on the raw width, one value projection, per-chunk weighted sums
        return 2 * cfg.queries * n_tokens * dim + 2 * n_tokens * dim * dim + 2 * n_tokens * dim + head
    raise ValueError(f"probe {kind!r}; valid: {list(PROBES)}")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------ cross-fitting
def cross_fit(
    make: Callable[[], nn.Module],
    inputs: tuple[torch.Tensor, ...],
    labels: torch.Tensor,
    folds: np.ndarray,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
) -> tuple[np.ndarray, float]:
    """Out-of-fold predictions (N,) of ``make()`` models trained on ``inputs`` (each (N, ...)) and the median seconds
    per training step; the training batches depend only on ``seed`` and the fold, so every model sees the same."""
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={steps}, batch={batch}")
    pred = np.zeros(len(labels), dtype=np.int64)
    secs: list[float] = []
    for f in range(int(folds.max()) + 1):
        train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        torch.manual_seed(seed * 1000 + f)
        model = make()
        opt, sched = adamw(model, steps, lr)
        gen = np.random.default_rng(seed * 1000 + f)
        model.train()
        for _ in range(steps):
            idx = torch.from_numpy(gen.choice(train, size=min(batch, len(train)), replace=False))
            t0 = time.perf_counter()
            loss = nn.functional.cross_entropy(model(*(x[idx] for x in inputs)), labels[idx])
            step(model, opt, sched, loss)
            secs.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            t_idx = torch.from_numpy(test)
            pred[test] = model(*(x[t_idx] for x in inputs)).argmax(-1).numpy()
    return pred, float(np.median(secs))


def accuracy_block(correct: np.ndarray, base: np.ndarray | None = None) -> dict:
    """Accuracy with its Wilson interval and, given ``base`` (paired 0/1), the exact McNemar test against it."""
    out = proportion(int(correct.sum()), len(correct))
    if base is not None:
        m = mcnemar_exact(correct.tolist(), base.tolist())
        out.update({"only_this": m.only_a, "only_base": m.only_b, "mcnemar_p": m.pvalue})
    return out


def run(config: ProbingSst2Config | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Cross-fitted probes on frozen MiniLM states of SST-2: accuracy, parameters, FLOPs, step time.
    Settings: :class:`ProbingSst2Config`."""
    cfg = ProbingSst2Config.make(config, **overrides)
    if cfg.queries < 1:
        raise ValueError(f"queries must be >= 1, got {cfg.queries}")
    texts, labels = sst2_sentences(cfg.items)
    folds = fold_ids(len(texts), cfg.folds, cfg.seed)
    with progress_bar(NAME, len(PROBES) + 1, quiet=quiet) as advance:
        st = minilm_states(texts, cfg.max_tokens)
        advance()
        x, mask, y = st["tokens"], st["mask"], torch.tensor(labels)
        dim = x.shape[-1]
        n_tok = float(mask.sum(-1).float().mean())
        preds, probes = {}, {}
        for kind in PROBES:
            pred, sec = cross_fit(
                lambda kind=kind: make_probe(kind, dim, cfg), (x, mask), y, folds, cfg.steps, cfg.batch, cfg.lr, cfg.seed
            )
            preds[kind] = pred
            probes[kind] = {
                "params": n_params(make_probe(kind, dim, cfg)),
                "flops": probe_flops(kind, dim, n_tok, cfg),
                "seconds_per_step": sec,
            }
            advance()
    y_np = y.numpy()
    correct = {k: (p == y_np).astype(np.int64) for k, p in preds.items()}
    for k in PROBES:
        probes[k]["accuracy"] = accuracy_block(correct[k])
    for k in ("linear_cls", "linear_mean", "mha"):  # EP against each other probe on the same sentences
        probes["ep"][f"vs_{k}"] = accuracy_block(correct["ep"], correct[k])
    measured = {"probes": probes, "items": len(texts), "mean_tokens": n_tok, "dim": dim, "positive": int(y_np.sum())}
    records = [
        {"item": i, "label": int(y_np[i]), "fold": int(folds[i]), **{k: int(preds[k][i]) for k in PROBES}}
        for i in range(len(texts))
    ]
    res = lab_result(NAME, measured, cfg.record(), records)
    if not quiet:
        rows = [[k, v["accuracy"]["value"], v["params"], v["flops"], v["seconds_per_step"]] for k, v in probes.items()]
        print_table(
            f"Probes on frozen MiniLM, SST-2 ({len(texts)} sentences, {cfg.folds}-fold)",
            ["probe", "accuracy", "params", "FLOPs / sentence", "s / step"],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    p = res.measured["probes"]
    names = list(p)
    acc = [p[k]["accuracy"]["value"] for k in names]
    lo = [a - p[k]["accuracy"]["ci"][0] for a, k in zip(acc, names)]
    hi = [p[k]["accuracy"]["ci"][1] - a for a, k in zip(acc, names)]
    ax1.bar(names, acc, yerr=[lo, hi])
    ax1.set(ylabel="accuracy (95% Wilson)", title="SST-2, frozen MiniLM", ylim=(0.4, 1.0))
    ax2.scatter([p[k]["params"] for k in names], acc)
    for k, a in zip(names, acc):
        ax2.annotate(k, (p[k]["params"], a))
    ax2.set(xscale="log", xlabel="trainable parameters", ylabel="accuracy", title="accuracy vs cost")
