"""Experiment ``sinks``: does an attention sink on the first token emerge with softmax attention, but not
with sigmoid attention without normalisation, and less with a G1 output gate?

Papers: Gu et al., "When Attention Sink Emerges in Language Models: An Empirical View" (ICLR 2025,
arXiv 2410.10781) — sinks emerge during pre-training with softmax, and not with sigmoid attention without
normalisation; Qiu et al., "Gated Attention for LLMs" (NeurIPS 2025, arXiv 2505.06708) — the G1 gate
removes the first-token sink.

Metric (Gu et al.'s Sink_1^ε, on 64 validation windows of min(64, seq_len) positions — the paper's 64-token
probe): for each sample, layer and head, α_0 = mean over queries i ≥ 0 of the weight share
that key 0 gets, A_i0 / Σ_j A_ij (softmax rows already sum to one; σ weights of unnormalised sigmoid
attention are turned into shares so that all mechanisms are compared on one scale; the raw σ mean is
also reported).  ``first_token`` = mean α_0; ``sink_rate`` = Sink_1^ε = 100 · mean 1[α_0 > ε], ε = 0.3.
Every training and probe window starts with the same BOS token (id 256, :data:`headlab.lab.text.BOS`) at
position 0, which is key 0 — the fixed first token under which Gu et al. see sinks form.

Budget knobs (Gu et al.: sinks form with enough training data, longer contexts, larger learning rates and
weight decay): ``steps``, ``seq_len``, ``batch``, ``lr``, ``weight_decay``, ``layers``.  ``data`` picks the
training data: "text" (byte-level prose, :mod:`headlab.lab.text`) or "backcopy" (the bigram-backcopy language
of Guo et al., arXiv 2410.13835, :mod:`headlab.lab.backcopy`, in which a copying head is needed only after a
few trigger tokens and idle elsewhere).

The decision rules are registered in :mod:`headlab.results.lab_claims`: ``sinks`` (the first, pre-registered
size) and ``sinks-bos`` (the redesigned size); ``claim`` names the claim whose rule judges a run (and the
output files).
"""

from __future__ import annotations

import math

import torch

from headlab.results.claims import get as get_claim

from .backcopy import BackcopyData
from .lm import TinyLM, eval_loss, tiny_lm, train_lm
from .result import LabResult, judged, print_table
from .text import TextData

NAME = "sinks"
EPS = 0.3
MECHS = ("softmax", "sigmoid", "gated")
PROBE_SAMPLES = 64
PROBE_LEN = 64  # Gu et al. measure Sink_1 on the first 64 tokens
#: training data: name -> description (every window starts with the BOS token at position 0)
DATA = {
    "text": "pydoc_data.topics (bytes, BOS-prefixed)",
    "backcopy": "bigram-backcopy language (64 tokens, 3 triggers, 4 successors each; BOS-prefixed; arXiv 2410.13835)",
}


def probe_len(seq_len: int) -> int:
    """Length of the sink-probe windows: the first min(64, seq_len) positions (BOS + bytes)."""
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} must be >= 2")
    return min(PROBE_LEN, seq_len)


def sink_metrics(weights: list[torch.Tensor], eps: float = EPS) -> dict[str, float | list[float]]:
    """Sink statistics from per-layer weights (B, H, T, T) (rows need not sum to one): see module docstring."""
    shares, raws = [], []
    for w in weights:
        raws.append(w[..., 0].mean(-1))  # (B,H)
        shares.append((w[..., 0] / w.sum(-1).clamp_min(1e-12)).mean(-1))
    share = torch.stack(shares, 1)  # (B,L,H)
    raw = torch.stack(raws, 1)
    return {
        "first_token": share.mean().item(),
        "sink_rate": 100 * (share > eps).float().mean().item(),
        "raw_first_token": raw.mean().item(),
        "per_layer": share.mean((0, 2)).tolist(),
    }


@torch.no_grad()
def sink_stats(model: TinyLM, idx: torch.Tensor, eps: float = EPS) -> dict[str, float | list[float]]:
    """First-token statistics of a TinyLM on inputs idx (B, T)."""
    was = model.training
    model.eval()
    _, weights = model(idx, return_weights=True)
    model.train(was)
    return sink_metrics(weights, eps)


def run(
    steps: int = 1200,
    layers: int = 2,
    d_model: int = 64,
    heads: int = 4,
    batch: int = 32,
    seq_len: int = 64,
    lr: float = 3e-3,
    evals: int = 8,
    seed: int = 0,
    quiet: bool = False,
    weight_decay: float = 0.01,
    claim: str = NAME,
    data: str = "text",
) -> LabResult:
    """Train softmax / sigmoid / gated TinyLMs on the same data and budget; track sinks over training;
    judge with the registered claim ``claim``."""
    if not claim.startswith(NAME):
        raise ValueError(f"claim={claim!r} is not a sinks claim (valid: 'sinks' or a name starting with 'sinks-')")
    get_claim(claim)  # unknown name -> ValueError before any training
    if data not in DATA:
        raise ValueError(f"data={data!r}; valid: {', '.join(DATA)}")
    corpus = TextData.load() if data == "text" else BackcopyData.make(seed=seed)
    probe_x, _ = corpus.batch("val", PROBE_SAMPLES, probe_len(seq_len), torch.Generator().manual_seed(seed + 7))
    every = max(1, steps // evals)
    measured: dict[str, dict] = {}
    for mech in MECHS:
        model = tiny_lm(mech, layers, d_model, heads, max_len=seq_len, seed=seed)
        curve: dict[str, list] = {"step": [], "first_token": [], "sink_rate": [], "raw_first_token": []}

        def on_eval(step, m, curve=curve):
            s = sink_stats(m, probe_x)
            curve["step"].append(step)
            for k in ("first_token", "sink_rate", "raw_first_token"):
                curve[k].append(s[k])

        train_lm(
            model, corpus, steps, batch, seq_len, lr, seed, every, on_eval, quiet, f"sinks: {mech}", weight_decay=weight_decay
        )
        final = sink_stats(model, probe_x)
        loss = eval_loss(model, corpus, batch, seq_len)
        measured[mech] = {
            **curve,
            "final_first_token": final["first_token"],
            "final_sink_rate": final["sink_rate"],
            "final_per_layer": final["per_layer"],
            "val_loss": loss,
            "val_bpb": loss / math.log(2),
        }
    records = [
        {"mechanism": mech, **dict(zip(k, vals))}
        for mech, m in measured.items()
        for k in [("step", "first_token", "sink_rate", "raw_first_token")]
        for vals in zip(*(m[c] for c in k))
    ]
    res = judged(
        claim,
        measured,
        dict(
            steps=steps,
            layers=layers,
            d_model=d_model,
            heads=heads,
            batch=batch,
            seq_len=seq_len,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
            eps=EPS,
            probe_samples=PROBE_SAMPLES,
            probe_len=probe_len(seq_len),
            data=data,
            corpus=DATA[data],
        ),
        records,
    )
    if not quiet:
        print_table(
            "attention sinks at the end of training",
            ["mechanism", "Sink_1^0.3 (%)", "first-token share", "raw first-token weight", "val bits/byte"],
            [
                [
                    m,
                    measured[m]["final_sink_rate"],
                    measured[m]["final_first_token"],
                    measured[m]["raw_first_token"][-1],
                    measured[m]["val_bpb"],
                ]
                for m in MECHS
            ],
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    for mech, m in res.measured.items():
        ax1.plot(m["step"], m["sink_rate"], marker="o", label=mech)
        ax2.plot(m["step"], m["first_token"], marker="o", label=mech)
    ax1.set(xlabel="training step", ylabel="Sink_1^0.3 (%)", title="ε-sink rate on key 0")
    ax2.set(xlabel="training step", ylabel="mean weight share on key 0", title="first-token attention")
    ax1.legend()
    ax2.legend()
