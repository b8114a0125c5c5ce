"""Experiment ``dsf-equiv``: the equivalence conditions of the Dynamical Systems Framework checked numerically on
random inputs (Sieber et al., "Understanding the differences in Foundation Models: Attention, State Space Models, and
Recurrent Neural Networks", NeurIPS 2024, arXiv 2405.15731).

DSF writes a layer as h_t = Λ_t ⊙ h_{t−1} + (Δ_t u_t) B_t^T, y_t = h_t C_t (:mod:`headlab.modules.ssm`).  Each
check compares two forms on ``trials`` random draws of q, k, v (``batch``, ``heads``, ``length``, ``d_k`` / ``d_v``,
fp32) and records the relative error max|y_a − y_b| / max|y_b| (the Frobenius relative error for the softmax
approximation):

equal where DSF says they coincide (expected at fp32 rounding):

- ``linear_is_ssm``: causal linear attention without normaliser, Σ_{s≤t} (φ(q_t)·φ(k_s)) v_s with φ = elu + 1, is
  the SSM with A = 0 (Λ = 1), Δ = 1, B_t = φ(k_t), C_t = φ(q_t), u_t = v_t (the recurrence);
- ``gated_linear_is_scalar_ssm``: a per-head scalar state transition (A the same for every channel and state
  entry, Δ_t one value per step) is gated linear attention with log-decay Δ_t a and values Δ_t v_t
  (:func:`headlab.modules.ssm.linear_chunked`);
- ``normalised_is_ssm_ratio``: normalised linear attention is the ratio of two such SSMs, the second run on the
  constant input u = 1 (its output is the normaliser φ(q_t)·Σ_{s≤t} φ(k_s));

different where DSF says they differ (a measured gap):

- ``selective_vs_linear``: the selective SSM (Λ_t = exp(Δ_t A), A[c, m] = −(m + 1) as in S4D-real / Mamba,
  Δ = softplus(random)) against linear attention on the same B, C, u;
- ``normalised_vs_ssm``: normalised linear attention against the plain SSM (A = 0, Δ = 1);

and softmax attention, whose DSF state is infinite-dimensional (the exp kernel), approximated by normalised linear
attention with ``features`` positive random features (φ(x) = exp(w·x − |x|²/2)/√m, w ~ N(0, I), so that
E[φ(q)·φ(k)] = exp(q·k)): the error against exact causal softmax attention at each state size m, the log-log
slope of error against m (Monte Carlo: about −1/2) and the error left at the largest m.

The decision rule is registered in the claims harness (``repro/headlab_repro/paper_claims.py``, ``dsf-equiv``).
Shapes: q, k (B, H, T, d_k), v (B, H, T, d_v).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from headlab.modules.linear import EPS, linear_attention_parallel
from headlab.modules.softmax import softmax_weights
from headlab.modules.ssm import linear_chunked, ssm_recurrent
from headlab.progress import progress_bar

from .config import DsfEquivConfig
from .result import LabResult, lab_result, print_table

NAME = DsfEquivConfig.NAME
EQUAL = ("linear_is_ssm", "gated_linear_is_scalar_ssm", "normalised_is_ssm_ratio")
DIFFER = ("selective_vs_linear", "normalised_vs_ssm")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def phi(x: torch.Tensor) -> torch.Tensor:
    """The positive feature map of linear attention, elu(x) + 1."""
    return F.elu(x) + 1


def positive_random_features(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (..., d), w (m, d) -> (..., m) with E[φ(q)·φ(k)] = exp(q·k)."""
    return torch.exp(x @ w.T - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(w.shape[0])


def one_trial(cfg: DsfEquivConfig, gen: torch.Generator) -> dict:
    """Relative errors of every check on one random draw."""
    b, h, t, dk, dv = cfg.batch, cfg.heads, cfg.length, cfg.d_k, cfg.d_v
    q, k = torch.randn(b, h, t, dk, generator=gen), torch.randn(b, h, t, dk, generator=gen)
    v = torch.randn(b, h, t, dv, generator=gen)
    fq, fk = phi(q), phi(k)
    ones = torch.ones(b, h, t, dv)
    zero_a = torch.zeros(h, dv, dk)
    out: dict = {}
    # linear attention (no normaliser) vs the SSM with A = 0, Δ = 1
    lin = linear_attention_parallel(q, k, v, feature_map="elu1", normalize="none")
    ssm_plain = ssm_recurrent(v, ones, fk, fq, zero_a)
    out["linear_is_ssm"] = rel_err(ssm_plain, lin)
    # a scalar state transition per head = gated linear attention
    a_h = -torch.rand(h, generator=gen) - 0.1  # (H,) < 0
    delta = F.softplus(torch.randn(b, h, t, generator=gen))  # (B,H,T), one Δ per step
    ssm_scalar = ssm_recurrent(v, delta[..., None].expand(b, h, t, dv), fk, fq, a_h[:, None, None].expand(h, dv, dk))
    gla = linear_chunked(fq, fk, delta[..., None] * v, log_decay=delta * a_h[None, :, None], chunk=16)
    out["gated_linear_is_scalar_ssm"] = rel_err(ssm_scalar, gla)
    # normalised linear attention = SSM(u = v) / (SSM(u = 1) + eps)
    lin_norm = linear_attention_parallel(q, k, v, feature_map="elu1", normalize="sum")
    ratio = ssm_plain / (ssm_recurrent(ones, ones, fk, fq, zero_a) + EPS)
    out["normalised_is_ssm_ratio"] = rel_err(ratio, lin_norm)
    # the selective SSM (diagonal, input-dependent Λ) is not linear attention
    a_s4d = -torch.arange(1, dk + 1, dtype=torch.float).expand(h, dv, dk).contiguous()
    d_sel = F.softplus(torch.randn(b, h, t, dv, generator=gen))
    out["selective_vs_linear"] = rel_err(ssm_recurrent(v, d_sel, fk, fq, a_s4d), lin)
    out["normalised_vs_ssm"] = rel_err(lin_norm, ssm_plain)
    # softmax attention approximated with m positive random features (finite state m x d_v)
    qs, ks = q * dk**-0.25, k * dk**-0.25  # q·k/√d_k = qs·ks
    exact = softmax_weights(q, k, causal=True) @ v
    out["softmax_rf"] = {}
    for m in cfg.features:
        w = torch.randn(m, dk, generator=gen)
        y = linear_attention_parallel(positive_random_features(qs, w), positive_random_features(ks, w), v, "identity", "sum")
        out["softmax_rf"][str(m)] = float((y - exact).norm() / exact.norm())
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


def run(config: DsfEquivConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Every DSF check on ``trials`` random draws. Settings: :class:`DsfEquivConfig`."""
    cfg = DsfEquivConfig.make(config, **overrides)
    if min(cfg.trials, cfg.batch, cfg.heads, cfg.length, cfg.d_k, cfg.d_v) < 1:
        raise ValueError(f"trials, batch, heads, length, d_k, d_v must be >= 1; got {cfg}")
    if len(cfg.features) < 2 or min(cfg.features) < 1 or list(cfg.features) != sorted(set(cfg.features)):
        raise ValueError(f"features must list >= 2 increasing state sizes >= 1, got {cfg.features}")
    gen = torch.Generator().manual_seed(cfg.seed)
    trials = []
    with progress_bar(NAME, cfg.trials, quiet=quiet) as advance:
        for _ in range(cfg.trials):
            trials.append(one_trial(cfg, gen))
            advance()
    measured: dict = {}
    for key in (*EQUAL, *DIFFER):
        errs = [tr[key] for tr in trials]
        measured[key] = {"max": max(errs), "min": min(errs), "trials": errs}
    rf = {m: float(np.mean([tr["softmax_rf"][str(m)] for tr in trials])) for m in cfg.features}
    measured["softmax_rf"] = {
        "features": list(cfg.features),
        "mean_error": [rf[m] for m in cfg.features],
        "slope": slope(list(cfg.features), [rf[m] for m in cfg.features]),
        "error_at_largest": rf[cfg.features[-1]],
    }
    records = [
        {"trial": i, **{k: v for k, v in tr.items() if k != "softmax_rf"}, **{f"rf_{m}": e for m, e in tr["softmax_rf"].items()}}
        for i, tr in enumerate(trials)
    ]
    res = lab_result(NAME, measured, cfg.record(), records)
    if not quiet:
        rows = [[k, "equal", measured[k]["max"]] for k in EQUAL] + [[k, "differ", measured[k]["min"]] for k in DIFFER]
        rows += [[f"softmax vs {m} random features", "approximate", rf[m]] for m in cfg.features]
        print_table(
            f"DSF checks ({cfg.trials} random draws; softmax approximation slope {measured['softmax_rf']['slope']:.2f})",
            ["check", "DSF says", "relative error (max over draws if equal, min if differ)"],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    m = res.measured
    keys = [*EQUAL, *DIFFER]
    ax1.bar(range(len(keys)), [max(m[k]["max"], 1e-12) for k in keys], color=["C0"] * len(EQUAL) + ["C3"] * len(DIFFER))
    ax1.set_xticks(range(len(keys)), keys, rotation=30, ha="right", fontsize=7)
    ax1.set(yscale="log", ylabel="relative error", title="equal (blue) and different (red) forms")
    rf = m["softmax_rf"]
    ax2.plot(rf["features"], rf["mean_error"], marker="o")
    ax2.set(
        xscale="log",
        yscale="log",
        xlabel="random features m (state size)",
        ylabel="relative error vs softmax",
        title=f"softmax from a finite state (slope {rf['slope']:.2f})",
    )
