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
also reported).  ``first_token`` = mean α_0; ``sink_rate`` = Sink_1^ε = 100 · mean 1[α_0 > ε], ε = 0.3 (:data:`EPS`, the sink-rate probe's).
Every training and probe window starts with the same BOS token (id 256, :data:`headlab.lab.text.BOS`) at
position 0, which is key 0 — the fixed first token under which Gu et al. see sinks form.

Budget knobs (Gu et al.: sinks form with enough training data, longer contexts, larger learning rates and
weight decay): ``steps``, ``seq_len``, ``batch``, ``lr``, ``weight_decay``, ``layers``.  ``data`` picks the
training data: "text" (byte-level prose, :mod:`headlab.lab.text`) or "backcopy" (the bigram-backcopy language
of Guo et al., arXiv 2410.13835, :mod:`headlab.lab.backcopy`, in which a copying head is needed only after a
few trigger tokens and idle elsewhere).

Architecture knobs: ``mlp=False`` trains attention-only models and ``tied=False`` gives them their own
read-out (:class:`headlab.lab.lm.TinyLM`).  In the bigram-backcopy language a copying head is useful only at
trigger positions; with an MLP after it, the MLP can ignore its output elsewhere, while in an attention-only
model the head's output goes straight to the logits, so a softmax head — whose weights must sum to one — can
only switch itself off by parking on a token with a near-zero value (Guo et al.'s "dormant" head, a sink),
whereas a sigmoid head can lower all its weights and a gated head can close its gate.  On backcopy data the
probe also splits the first-token share into *active* queries (the input token is a trigger, so the head
must copy) and *dormant* ones (every other query after BOS).

``repeats`` trains every mechanism with seeds ``seed``, ``seed + 1``, …: the top-level numbers are means over
seeds (equal probe sizes, so the pooled Sink rate is the mean rate) and ``by_seed`` keeps each seed's.

The decision rules are registered in the claims harness beside the library (``repro/headlab_repro/lab_claims.py``): ``sinks`` (the first,
pre-registered size on prose), ``sinks-dormant`` (the redesigned attention-only backcopy size, three seeds)
and ``sinks-dormant-mlp`` (its control with MLPs); ``name`` names the run (its
output files; the harness judges a run by the claim of that name).
"""

from __future__ import annotations

import math

import torch

from headlab.probes.sink import SinkRateProbe

from .backcopy import BackcopyData
from .config import SinksConfig
from .lm import TinyLM, eval_loss, tiny_lm, train_lm
from .result import LabResult, lab_result, print_table
from .text import TextData

NAME = SinksConfig.NAME
EPS = SinkRateProbe().eps  # Gu et al.'s ε of Sink_1^ε: the sink-rate probe's default (its one home)
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


def first_token_shares(weights: list[torch.Tensor]) -> torch.Tensor:
    """A_i0 / Σ_j A_ij for every query: per-layer weights (B, H, T, T) -> (B, L, H, T)."""
    return torch.stack([w[..., 0] / w.sum(-1).clamp_min(1e-12) for w in weights], 1)


def sink_metrics(weights: list[torch.Tensor], eps: float = EPS) -> dict[str, float | list[float]]:
    """Sink statistics from per-layer weights (B, H, T, T) (rows need not sum to one): see module docstring."""
    share = first_token_shares(weights).mean(-1)  # (B,L,H)
    raw = torch.stack([w[..., 0].mean(-1) for w in weights], 1)  # (B,L,H)
    return {
        "first_token": share.mean().item(),
        "sink_rate": 100 * (share > eps).float().mean().item(),
        "raw_first_token": raw.mean().item(),
        "per_layer": share.mean((0, 2)).tolist(),
    }


def split_shares(weights: list[torch.Tensor], active: torch.Tensor) -> dict[str, float]:
    """Mean weight share on key 0 over *active* queries (``active`` (B, T) True) and over the other queries
    after position 0, pooled over layers and heads; weights are per-layer (B, H, T, T).  NaN when a group
    is empty."""
    share = first_token_shares(weights)  # (B,L,H,T)
    if active.shape != (share.shape[0], share.shape[-1]):
        raise ValueError(f"active must be (B, T) = {(share.shape[0], share.shape[-1])}, got {tuple(active.shape)}")
    act = active.clone()
    dormant = ~active
    act[:, 0] = dormant[:, 0] = False  # query 0 sees only key 0
    out = {}
    for name, mask in (("active_first_token", act), ("dormant_first_token", dormant)):
        m = mask[:, None, None, :].expand_as(share)
        out[name] = share[m].mean().item() if m.any() else float("nan")
    return out


@torch.no_grad()
def sink_stats(model: TinyLM, idx: torch.Tensor, eps: float = EPS, active: torch.Tensor | None = None) -> dict:
    """First-token statistics of a TinyLM on inputs idx (B, T); with ``active`` (B, T) also the active /
    dormant split of :func:`split_shares`."""
    was = model.training
    model.eval()
    _, weights = model(idx, return_weights=True)
    model.train(was)
    out: dict = sink_metrics(weights, eps)
    if active is not None:
        out.update(split_shares(weights, active))
    return out


FINALS = ("final_first_token", "final_sink_rate", "val_loss", "val_bpb")
SPLIT = ("final_active_first_token", "final_dormant_first_token")
CURVES = ("first_token", "sink_rate", "raw_first_token")


def _mean(xs: list) -> float:
    return sum(xs) / len(xs)


def _pool(runs: list[dict]) -> dict:
    """Means over seeds of the finals, per-layer shares and curves (same eval steps in every run)."""
    out: dict = {"step": runs[0]["step"]}
    for k in CURVES:
        out[k] = [_mean(list(v)) for v in zip(*(r[k] for r in runs))]
    for k in FINALS + tuple(k for k in SPLIT if k in runs[0]):
        out[k] = _mean([r[k] for r in runs])
    out["final_per_layer"] = [_mean(list(v)) for v in zip(*(r["final_per_layer"] for r in runs))]
    if len(runs) > 1:
        out["by_seed"] = [{k: r[k] for k in ("seed",) + FINALS + SPLIT + ("final_per_layer",) if k in r} for r in runs]
    return out


def run(config: SinksConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Train softmax / sigmoid / gated TinyLMs on the same data and budget (``repeats`` seeds each); track
    sinks over training; the harness judges the run by its ``name``. Settings: :class:`SinksConfig`."""
    cfg = SinksConfig.make(config, **overrides)
    steps, layers, d_model, heads, batch, seq_len = cfg.steps, cfg.layers, cfg.d_model, cfg.heads, cfg.batch, cfg.seq_len
    seed, data, repeats, name = cfg.seed, cfg.data, cfg.repeats, cfg.name
    if not name.startswith(NAME):
        raise ValueError(f"name={name!r} is not a sinks run name (valid: 'sinks' or a name starting with 'sinks-')")
    if data not in DATA:
        raise ValueError(f"data={data!r}; valid: {', '.join(DATA)}")
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    corpus = TextData.load() if data == "text" else BackcopyData.make(seed=seed)
    probe_x, _ = corpus.batch("val", PROBE_SAMPLES, probe_len(seq_len), torch.Generator().manual_seed(seed + 7))
    # backcopy: the query at a trigger token must copy (active); every other query has nothing to do
    active = probe_x < corpus.triggers if isinstance(corpus, BackcopyData) else None
    every = max(1, steps // cfg.evals)
    measured: dict[str, dict] = {}
    records = []
    for mech in MECHS:
        runs = []
        for s_ in range(seed, seed + repeats):
            model = tiny_lm(mech, layers, d_model, heads, max_len=seq_len, seed=s_, mlp=cfg.mlp, tied=cfg.tied)
            curve: dict[str, list] = {"step": [], "first_token": [], "sink_rate": [], "raw_first_token": []}

            def on_eval(step, m, curve=curve):
                st = sink_stats(m, probe_x)
                curve["step"].append(step)
                for k in CURVES:
                    curve[k].append(st[k])

            label = f"sinks: {mech}" + (f" seed {s_}" if repeats > 1 else "")
            train_lm(
                model, corpus, steps, batch, seq_len, cfg.lr, s_, every, on_eval, quiet, label, weight_decay=cfg.weight_decay
            )
            final = sink_stats(model, probe_x, active=active)
            loss = eval_loss(model, corpus, batch, seq_len)
            run_ = {
                "seed": s_,
                **curve,
                "final_first_token": final["first_token"],
                "final_sink_rate": final["sink_rate"],
                "final_per_layer": final["per_layer"],
                "val_loss": loss,
                "val_bpb": loss / math.log(2),
            }
            if active is not None:
                run_["final_active_first_token"] = final["active_first_token"]
                run_["final_dormant_first_token"] = final["dormant_first_token"]
            runs.append(run_)
            records += [
                {"mechanism": mech, "seed": s_, **dict(zip(("step",) + CURVES, vals))}
                for vals in zip(*(curve[c] for c in ("step",) + CURVES))
            ]
        measured[mech] = _pool(runs)
    config = cfg.record(eps=EPS, probe_samples=PROBE_SAMPLES, probe_len=probe_len(seq_len), corpus=DATA[data])
    res = lab_result(name, measured, config, records)
    if not quiet:
        split = active is not None
        print_table(
            "attention sinks at the end of training" + (f" (mean of {repeats} seeds)" if repeats > 1 else ""),
            ["mechanism", f"Sink_1^{EPS:g} (%)", "first-token share", "raw first-token weight", "val bits/byte"]
            + (["share, active queries", "share, dormant queries"] if split else []),
            [
                [
                    m,
                    measured[m]["final_sink_rate"],
                    measured[m]["final_first_token"],
                    measured[m]["raw_first_token"][-1],
                    measured[m]["val_bpb"],
                ]
                + ([measured[m][k] for k in SPLIT] if split else [])
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
    seeds = res.config.get("repeats", 1)
    mean = f" (mean of {seeds} seeds)" if seeds > 1 else ""
    ax1.set(xlabel="training step", ylabel=f"Sink_1^{res.config.get('eps', EPS):g} (%)", title="ε-sink rate on key 0" + mean)
    ax2.set(xlabel="training step", ylabel="mean weight share on key 0", title="first-token attention")
    ax1.legend()
    ax2.legend()
