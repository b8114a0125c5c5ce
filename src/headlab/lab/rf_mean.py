"""Experiment ``rf-mean``: random-feature attention with frozen query-key weights drawn with a non-zero mean vs a
zero mean (Fu, Guo, Bai, Mei, "What can a single attention layer learn? A study through the random features
lens", NeurIPS 2023, arXiv 2307.11353).

Setting (the paper's): one query x_0 and N keys x_1..x_N in R^d (uniform on the unit sphere); a single attention
layer with M heads whose query-key matrices W_m (d x d) are sampled once and frozen, and whose value maps are
trained.  Head m reads h_m = Σ_i softmax_i(x_0ᵀ W_m x_i) x_i, and the prediction ŷ = Σ_m ⟨a_m, h_m⟩ is linear
in the trained weights a, so training is ridge regression on the features [h_1 … h_M] (closed form; the ridge
strength is chosen on a held-out split from a fixed grid).

W_m = μ I + G_m with G_m entries N(0, σ²): ``mean`` μ = 0 (zero-mean) or μ > 0 (non-zero mean).  Targets:
- ``similarity``: y = Σ_i softmax_i(γ ⟨x_0, x_i⟩) ⟨β, x_i⟩ — depends on the query-key inner products, the kind
  of target for which the paper shows a non-zero mean improves the sample complexity;
- ``mean-key`` (control): y = ⟨β, mean_i x_i⟩ — does not involve the query, so the mean should not matter.
Test MSE is reported against the sample size n, averaged over seeds.

The claim, the rule and the decision code are registered in the claims harness beside the library (``repro/headlab_repro/lab_claims.py``) (``rf-mean``).
"""

from __future__ import annotations

import torch

from headlab.progress import progress_bar

from .config import RfMeanConfig
from .result import LabResult, lab_result, print_table

NAME = RfMeanConfig.NAME
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
TARGETS = ("similarity", "mean-key")


def sphere(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def target(kind: str, x0: torch.Tensor, xs: torch.Tensor, beta: torch.Tensor, gamma: float) -> torch.Tensor:
    """x0 (n, d), xs (n, N, d), beta (d,) -> y (n,)."""
    if kind == "similarity":
        a = torch.softmax(gamma * (xs @ x0[..., None]).squeeze(-1), -1)  # (n, N)
        return (a * (xs @ beta)).sum(-1)
    if kind == "mean-key":
        return xs.mean(1) @ beta
    raise ValueError(f"target={kind!r}; valid: {list(TARGETS)}")


def features(x0: torch.Tensor, xs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Random-feature attention read-outs: w (M, d, d) frozen -> (n, M·d) = [Σ_i softmax_i(x_0ᵀ W_m x_i) x_i]_m."""
    s = torch.einsum("nd,mde,nke->nmk", x0, w, xs)  # (n, M, N)
    return torch.einsum("nmk,nkd->nmd", s.softmax(-1), xs).flatten(1)


def ridge_fit(f: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    p = f.shape[1]
    return torch.linalg.solve(f.T @ f + lam * f.shape[0] * torch.eye(p, dtype=f.dtype), f.T @ y)


def fit_and_test(ftr, ytr, fva, yva, fte, yte) -> tuple[float, float]:
    """Pick λ on the validation split, refit on train, return (test MSE, λ)."""
    best = min(RIDGES, key=lambda lam: float(((fva @ ridge_fit(ftr, ytr, lam) - yva) ** 2).mean()))
    a = ridge_fit(ftr, ytr, best)
    return float(((fte @ a - yte) ** 2).mean()), best


def run(config: RfMeanConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Ridge-fit random-feature attention with zero- and non-zero-mean QK weights on both targets, per training
    size and seed. Settings: :class:`RfMeanConfig`."""
    cfg = RfMeanConfig.make(config, **overrides)
    d, keys, heads, sizes, means, seeds, n_val, n_test = (
        cfg.d,
        cfg.keys,
        cfg.heads,
        cfg.sizes,
        cfg.means,
        cfg.seeds,
        cfg.n_val,
        cfg.n_test,
    )
    if min(d, keys, heads, seeds, n_val, n_test, *sizes) < 1 or len(means) < 2 or means[0] != 0.0:
        raise ValueError(
            f"need positive sizes and means starting with 0.0; got d={d}, keys={keys}, heads={heads}, "
            f"sizes={sizes}, means={means}, seeds={seeds}"
        )
    results: dict = {t: {str(m): {str(n): [] for n in sizes} for m in means} for t in TARGETS}
    records = []
    with progress_bar("rf-mean", seeds * len(means), quiet=quiet) as advance:
        for s in range(seeds):
            g = torch.Generator().manual_seed(cfg.seed * 1000 + s)
            beta = sphere((d,), g)
            n_all = max(sizes) + n_val + n_test
            x0, xs = sphere((n_all, d), g), sphere((n_all, keys, d), g)
            noise = torch.randn(heads, d, d, generator=g, dtype=torch.float64) * cfg.sigma  # shared across means
            for mu in means:
                w = mu * torch.eye(d, dtype=torch.float64) + noise
                f = features(x0, xs, w)
                for kind in TARGETS:
                    y = target(kind, x0, xs, beta, cfg.gamma)
                    y = (y - y.mean()) / y.std()
                    va, te = slice(max(sizes), max(sizes) + n_val), slice(max(sizes) + n_val, n_all)
                    for n in sizes:
                        mse, lam = fit_and_test(f[:n], y[:n], f[va], y[va], f[te], y[te])
                        results[kind][str(mu)][str(n)].append(mse)
                        records.append({"seed": s, "mean": mu, "target": kind, "n": n, "test_mse": mse, "ridge": lam})
                advance()
    summary = {k: {m: {n: sum(v) / len(v) for n, v in by_n.items()} for m, by_n in by_m.items()} for k, by_m in results.items()}
    measured = {"test_mse": summary, "per_seed": results, "sizes": list(sizes), "means": list(means), "test_items": n_test}
    res = lab_result(NAME, measured, cfg.record(), records)
    if not quiet:
        rows = [[k, n] + [summary[k][str(m)][str(n)] for m in means] for k in TARGETS for n in sizes]
        print_table(
            "random-feature attention: test MSE (targets standardised; mean over seeds)",
            ["target", "n"] + [f"mean {m}" for m in means],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    axes = fig.subplots(1, len(TARGETS))
    sizes = res.measured["sizes"]
    for ax, kind in zip(axes, TARGETS):
        for m in res.measured["means"]:
            ax.plot(
                sizes,
                [res.measured["test_mse"][kind][str(m)][str(n)] for n in sizes],
                marker="o",
                label=f"W = {m}·I + noise" if m else "W = noise (zero mean)",
            )
        ax.set(
            xscale="log", yscale="log", xlabel="training samples n", ylabel="test MSE (standardised y)", title=f"target: {kind}"
        )
        ax.legend(fontsize=8)
