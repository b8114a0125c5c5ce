"""Experiment ``deconstruct``: which principles of attention a small LM needs (Xue, Moosavi, Aletras,
"Deconstructing Attention: Investigating Design Principles for Effective Language Modeling", 2025).

The same tiny byte-level LM (4 layers) is trained on prose with one budget in two kinds of stacks:
- *uniform*: every layer uses one variant of :mod:`headlab.modules.deconstruct` — softmax (standard),
  no-mix (no token mixing), fixed-seq (sequence-independent weights), static-emb (q, k from the input embeddings:
  decoupled from the current layer), rnd-emb (q, k from a frozen random token code), taylor (another form that
  approximates softmax), relu-len (a form that does not);
- *hybrid*: softmax in layers 0 and 2, the variant in layers 1 and 3.
Validation loss (nats/byte) of each is compared with the all-softmax model's (ratio r = loss / softmax loss).

The claims, the rules and the decision code are registered in the claims harness beside the library (``repro/headlab_repro/lab_claims.py``):
``deconstruct`` (300 steps, the first pre-registered size) and larger sizes under their own names; ``name``
names the run (its output files; the harness judges a run by the claim of that name).
"""

from __future__ import annotations

import math

import torch

from headlab.modules.deconstruct import EmbeddingTap, layer_stack

from .config import DeconstructConfig
from .lm import eval_loss, tiny_lm, train_lm
from .result import LabResult, lab_result, print_table
from .text import VOCAB, TextData

NAME = DeconstructConfig.NAME
RELAXED = ("no-mix", "fixed-seq", "static-emb", "rnd-emb", "taylor", "relu-len")


def stacks(layers: int) -> dict[str, list[str]]:
    """Model name -> per-layer variants: 'uniform:V' for every variant, 'hybrid:V' (softmax in even layers)."""
    if layers < 2:
        raise ValueError(f"layers={layers} must be >= 2 for hybrid stacks")
    out = {"uniform:softmax": ["softmax"] * layers}
    out.update({f"uniform:{v}": [v] * layers for v in RELAXED})
    out.update({f"hybrid:{v}": ["softmax" if i % 2 == 0 else v for i in range(layers)] for v in RELAXED})
    return out


def run(config: DeconstructConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Train every uniform and hybrid stack at one budget; the harness judges the run by its ``name``.
    Settings: :class:`DeconstructConfig`."""
    cfg = DeconstructConfig.make(config, **overrides)
    steps, layers, batch, seq_len, eval_batches, name = cfg.steps, cfg.layers, cfg.batch, cfg.seq_len, cfg.eval_batches, cfg.name
    if not name.startswith(NAME):
        raise ValueError(f"name={name!r} is not a deconstruct run name (valid: 'deconstruct' or 'deconstruct-...')")
    if steps < 1 or eval_batches < 1:
        raise ValueError(f"steps={steps} and eval_batches={eval_batches} must be >= 1")
    data = TextData.load()
    counts = torch.bincount(data.train, minlength=VOCAB).double()
    p = counts / counts.sum()
    unigram = float(-(p[p > 0] * p[p > 0].log()).sum())
    models, records = {}, []
    for model_name, names in stacks(layers).items():
        tap = EmbeddingTap()
        model = tiny_lm(layer_stack(names, tap), layers, cfg.d_model, cfg.heads, max_len=seq_len, seed=cfg.seed)
        handle = tap.attach(model.tok)
        hist = train_lm(
            model, data, steps, batch, seq_len, cfg.lr, cfg.seed, quiet=quiet, description=f"deconstruct: {model_name}"
        )
        loss = eval_loss(model, data, batch, seq_len, eval_batches)
        handle.remove()
        every = max(1, steps // 25)
        models[model_name] = {"layers": names, "val_loss": loss, "train_loss": hist[::every]}
        records += [{"model": model_name, "step": i * every, "train_loss": v} for i, v in enumerate(hist[::every])]
    base = models["uniform:softmax"]["val_loss"]
    for m in models.values():
        m["ratio"] = m["val_loss"] / base
    measured = {
        "models": models,
        "softmax_loss": base,
        "unigram_loss": unigram,
        "uniform_loss": math.log(VOCAB),
        "val_tokens": eval_batches * batch * seq_len,
    }
    res = lab_result(name, measured, cfg.record(variants=list(RELAXED)), records)
    if not quiet:
        rows = [
            [
                v,
                models[f"uniform:{v}"]["val_loss"],
                models[f"uniform:{v}"]["ratio"],
                models[f"hybrid:{v}"]["val_loss"] if v != "softmax" else "",
                models[f"hybrid:{v}"]["ratio"] if v != "softmax" else "",
            ]
            for v in ("softmax", *RELAXED)
        ]
        print_table(
            f"Deconstructing attention: val loss (nats/byte; unigram {unigram:.3f})",
            ["variant", "uniform loss", "uniform / softmax", "hybrid loss", "hybrid / softmax"],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    m = res.measured["models"]
    xs = range(len(RELAXED))
    ax1.bar([x - 0.2 for x in xs], [m[f"uniform:{v}"]["ratio"] for v in RELAXED], 0.4, label="uniform (all layers)")
    ax1.bar([x + 0.2 for x in xs], [m[f"hybrid:{v}"]["ratio"] for v in RELAXED], 0.4, label="hybrid (softmax in layers 0, 2)")
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.axhline(res.measured["unigram_loss"] / res.measured["softmax_loss"], color="grey", ls=":", label="unigram")
    ax1.set_xticks(list(xs), RELAXED, rotation=20)
    ax1.set(ylabel="val loss / all-softmax val loss", title="which relaxation costs what")
    ax1.legend(fontsize=7)
    steps = res.config["steps"]
    every = max(1, steps // 25)
    for name, v in m.items():
        ax2.plot(
            [i * every for i in range(len(v["train_loss"]))],
            v["train_loss"],
            lw=1,
            ls="-" if name.startswith("uniform") else "--",
            label=name,
        )
    ax2.set(xlabel="step", ylabel="train loss", title="training", ylim=(None, 3.5))
    ax2.legend(fontsize=5, ncol=2)
