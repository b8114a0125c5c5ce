"""Experiment ``icl-regression``: one-layer multi-head softmax attention trained on in-context linear
regression (He, Pan, Chen, Yang, "In-Context Linear Regression Demystified: Training Dynamics and
Mechanistic Interpretability of Multi-Head Softmax Attention", ICML 2025, arXiv 2503.12734).

Data: tokens z_i = (x_i, y_i) ∈ R^{d+1}, x ~ N(0, I_d), w ~ N(0, I_d/d) per sequence, y_i = w·x_i + σ ξ.
The query token is (x_q, 0); the model reads the last coordinate at the query position:
    ŷ = Σ_h v_h · Σ_i softmax_i(z_q^T W_h z_i) z_i       (attention over the n context tokens)
with per-head KQ matrices W_h ((d+1)×(d+1)) and OV read-out vectors v_h (d+1), no MLP, no layer norm.

Baselines on the same test sequences: the Bayes optimum (ridge with λ = σ² d, exact posterior mean),
one-step GD ŷ = c · (1/n) Σ_i y_i x_i·x_q with the best scalar c, and the zero predictor.
Structure: KQ diagonality = mean |diag| / mean |off-diag| of each head's x-block; OV zero-sum =
|Σ_h v_h[y]| / Σ_h |v_h[y]| (0 = exactly zero-sum).

The decision rule (performance vs one-step GD and single-head attention, the gap to Bayes, diagonal KQ,
opposite-sign zero-sum OV entries) is registered in the claims harness beside the library (``repro/headlab_repro/lab_claims.py``) (``icl-regression``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from headlab.progress import progress_bar

from .config import IclRegressionConfig
from .result import LabResult, lab_result, print_table

NAME = IclRegressionConfig.NAME
TEST_SEQUENCES = 4096


def sample(batch: int, n: int, d: int, noise: float, gen: torch.Generator):
    """Context x (B,n,d), y (B,n), query x_q (B,d), target y_q (B,), weights w (B,d)."""
    w = torch.randn(batch, d, generator=gen) / math.sqrt(d)
    x = torch.randn(batch, n + 1, d, generator=gen)
    y = (x @ w[..., None]).squeeze(-1) + noise * torch.randn(batch, n + 1, generator=gen)
    return x[:, :n], y[:, :n], x[:, n], y[:, n], w


class ICLAttention(nn.Module):
    """One-layer H-head softmax attention read-out (see module docstring)."""

    def __init__(self, d: int, heads: int, init_scale: float = 0.01):
        super().__init__()
        self.kq = nn.Parameter(init_scale * torch.randn(heads, d + 1, d + 1))
        self.ov = nn.Parameter(init_scale * torch.randn(heads, d + 1))

    def forward(self, x, y, xq):
        z = torch.cat([x, y[..., None]], -1)  # (B,n,d+1)
        zq = torch.cat([xq, torch.zeros_like(xq[:, :1])], -1)  # (B,d+1)
        logits = torch.einsum("bp,hpq,bnq->bhn", zq, self.kq, z)  # (B,H,n)
        att = logits.softmax(-1) @ z  # (B,H,d+1)
        return (att * self.ov).sum((-1, -2))


def ridge_predict(x, y, xq, lam: float):
    d = x.shape[-1]
    a = x.transpose(1, 2) @ x + lam * torch.eye(d)
    w = torch.linalg.solve(a, (x.transpose(1, 2) @ y[..., None])).squeeze(-1)
    return (w * xq).sum(-1)


def gd_feature(x, y, xq):
    """(1/n) Σ_i y_i x_i·x_q, the one-step-GD prediction up to its scale c."""
    return (y[..., None] * x).mean(1).mul(xq).sum(-1)


def structure(model: ICLAttention, d: int) -> dict[str, float]:
    kq = model.kq.detach()[:, :d, :d]
    diag = kq.diagonal(dim1=1, dim2=2).abs().mean().item()
    off = (kq.abs().sum((1, 2)) - kq.diagonal(dim1=1, dim2=2).abs().sum(1)).sum().item() / (kq.shape[0] * d * (d - 1))
    ovy = model.ov.detach()[:, -1]
    return {
        "kq_diag_ratio": diag / max(off, 1e-12),
        "ov_zero_sum": (ovy.sum().abs() / ovy.abs().sum().clamp_min(1e-12)).item(),
        "ov_y": ovy.tolist(),
        "kq_omega": model.kq.detach()[:, :d, :d].diagonal(dim1=1, dim2=2).mean(1).tolist(),
    }


def run(config: IclRegressionConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Train one model per head count in ``heads`` against the baselines. Settings: :class:`IclRegressionConfig`."""
    cfg = IclRegressionConfig.make(config, **overrides)
    steps, d, n, heads, noise, seed = cfg.steps, cfg.d, cfg.n, cfg.heads, cfg.noise, cfg.seed
    test_lengths = cfg.test_lengths if n in cfg.test_lengths else (n, *cfg.test_lengths)
    tests = {m: sample(TEST_SEQUENCES, m, d, noise, torch.Generator().manual_seed(seed + 100 + m)) for m in test_lengths}
    fit = sample(4096, n, d, noise, torch.Generator().manual_seed(seed + 99))
    f = gd_feature(*fit[:3])
    c = ((f * fit[3]).sum() / (f * f).sum()).item()  # best one-step-GD scale
    base = {}
    for m, (x, y, xq, yq, _) in tests.items():
        base[m] = {
            "bayes": ((ridge_predict(x, y, xq, noise**2 * d) - yq) ** 2).mean().item(),
            "gd": ((c * gd_feature(x, y, xq) - yq) ** 2).mean().item(),
            "zero": (yq**2).mean().item(),
        }
    measured: dict = {
        "baselines": {str(m): v for m, v in base.items()},
        "gd_scale": c,
        "models": {},
        "test_sequences": TEST_SEQUENCES,
    }
    records: list[dict] = []
    models = {}
    for h in heads:
        torch.manual_seed(seed)
        model = ICLAttention(d, h)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(seed + h)
        curve = {"step": [], "mse": []}
        x0, y0, xq0, yq0, _ = tests[n]
        with progress_bar(f"icl-regression: H={h}", steps, quiet=quiet) as advance:
            for step in range(1, steps + 1):
                x, y, xq, yq, _ = sample(cfg.batch, n, d, noise, gen)
                loss = ((model(x, y, xq) - yq) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                advance()
                if step % max(1, steps // 20) == 0 or step == steps:
                    with torch.no_grad():
                        curve["step"].append(step)
                        curve["mse"].append(((model(x0, y0, xq0) - yq0) ** 2).mean().item())
                        records.append({"heads": h, "step": step, "test_mse": curve["mse"][-1]})
        with torch.no_grad():
            mse = {str(m): ((model(x, y, xq) - yq) ** 2).mean().item() for m, (x, y, xq, yq, _) in tests.items()}
        measured["models"][str(h)] = {
            "curve": curve,
            "test_mse": mse,
            **structure(model, d),
            "kq": model.kq.detach().tolist(),
            "ov": model.ov.detach().tolist(),
        }
        models[h] = model
    multi = [h for h in heads if h >= 2]
    if multi:
        measured["best_multi_head"] = min(multi, key=lambda h: measured["models"][str(h)]["test_mse"][str(n)])
    res = lab_result(NAME, measured, cfg.record(test_lengths=list(test_lengths), optimizer="Adam"), records)
    if not quiet:
        rows = [
            [
                f"attention H={h}",
                *[measured["models"][str(h)]["test_mse"][str(m)] for m in test_lengths],
                measured["models"][str(h)]["kq_diag_ratio"],
                measured["models"][str(h)]["ov_zero_sum"],
            ]
            for h in heads
        ]
        rows += [[k, *[base[m][k] for m in test_lengths], "", ""] for k in ("bayes", "gd", "zero")]
        print_table(
            "in-context linear regression: test MSE",
            ["predictor", *[f"n={m}" for m in test_lengths], "KQ diag ratio", "OV zero-sum"],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    models = res.measured["models"]
    best = str(res.measured.get("best_multi_head", max(models, key=int)))
    kq, ov = torch.tensor(models[best]["kq"]), torch.tensor(models[best]["ov"])
    h = kq.shape[0]
    axes = fig.subplots(1, h + 2, gridspec_kw={"width_ratios": [3] + [1] * (h + 1)})
    n = str(res.config["n"])
    for key, m in models.items():
        axes[0].plot(m["curve"]["step"], m["curve"]["mse"], label=f"H={key}")
    for k, ls in (("bayes", "--"), ("gd", ":")):
        axes[0].axhline(res.measured["baselines"][n][k], ls=ls, color="k", label=k)
    axes[0].set(xlabel="step", ylabel="test MSE", title="training", yscale="log")
    axes[0].legend(fontsize=7)
    lim = kq.abs().max().item()
    for i in range(h):
        axes[1 + i].imshow(kq[i].numpy(), cmap="RdBu", vmin=-lim, vmax=lim)
        axes[1 + i].set_title(f"KQ head {i}", fontsize=8)
        axes[1 + i].axis("off")
    lim_ov = ov.abs().max().item()
    axes[-1].imshow(ov.T.numpy(), cmap="RdBu", vmin=-lim_ov, vmax=lim_ov)
    axes[-1].set(title=f"OV (H={best})", xlabel="head", ylabel="coordinate")
