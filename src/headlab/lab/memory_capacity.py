"""Experiment ``memory-capacity``: recall accuracy of the linear-attention (Hebbian) associative memory vs
the number of stored pairs N, for several key widths d_k ("Linear attention as Hebbian / Pavlovian
associative memory", 2025 — a capacity theorem: O(d_k) associations per head).

N random unit keys (d_k) and N random unit values (d_v) are written as M = Σ_j v_j k_j^T
(:func:`headlab.modules.hebbian_write`); each stored key is read back, ŷ = M k_m, and counts as recalled
when its nearest stored value by cosine is v_m.  Softmax attention over the same pairs (ŷ = V^T
softmax(β K k_m), β = ``beta``) is measured alongside for contrast.  Accuracies average ``trials`` seeds.

Capacity N_50(d_k) = number of pairs where recall accuracy crosses 50% (log-linear interpolation).

Prediction (:func:`predicted_recall`, the crosstalk argument behind the O(d_k) theorem): reading key m gives
v_m + Σ_{j≠m} (k_j·k_m) v_j; with random unit vectors the score of the right value is ≈ N(1, (N−1)/(d_k d_v))
and each of the N−1 wrong values scores ≈ N(0, 1/d_v + 1/d_k + (N−2)/(d_k d_v)); recall is the chance the
right one wins, treating the wrong scores as independent.  N_50 of that curve is the predicted capacity.
The decision rule is registered in the claims harness beside the library (``repro/headlab_repro/lab_claims.py``) (``memory-capacity``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from headlab.modules.linear import hebbian_read, hebbian_write
from headlab.progress import progress_bar

from .config import MemoryCapacityConfig
from .result import LabResult, lab_result, print_table

NAME = MemoryCapacityConfig.NAME
MULTIPLES = (0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16)


def recall(n: int, d_k: int, d_v: int, gen: torch.Generator, beta: float) -> tuple[float, float]:
    """(linear, softmax) recall accuracy for one random memory of n pairs."""
    keys = F.normalize(torch.randn(n, d_k, generator=gen), dim=-1)
    vals = F.normalize(torch.randn(n, d_v, generator=gen), dim=-1)
    lin = hebbian_read(hebbian_write(keys, vals), keys)  # (n, d_v)
    soft = (beta * keys @ keys.T).softmax(-1) @ vals
    target = torch.arange(n)
    acc = lambda y: (F.normalize(y, dim=-1) @ vals.T).argmax(-1).eq(target).float().mean().item()
    return acc(lin), acc(soft)


def predicted_recall(n: float, d_k: int, d_v: int) -> float:
    """Gaussian crosstalk prediction of the recall accuracy with n stored pairs (see module docstring)."""
    if n < 1 or d_k < 1 or d_v < 1:
        raise ValueError(f"need n >= 1, d_k >= 1, d_v >= 1; got n={n}, d_k={d_k}, d_v={d_v}")
    if n < 2:
        return 1.0
    s_right = math.sqrt((n - 1) / (d_k * d_v))
    s_wrong = math.sqrt(1 / d_v + 1 / d_k + (n - 2) / (d_k * d_v))
    s = np.linspace(1 - 10 * s_right, 1 + 10 * s_right, 4001)
    win = np.exp((n - 1) * stats.norm.logcdf(s / s_wrong))  # P(all wrong scores < s)
    return float(np.trapezoid(stats.norm.pdf(s, 1, s_right) * win, s))


def predicted_n50(d_k: int, d_v: int, level: float = 0.5) -> float:
    """Stored pairs at which :func:`predicted_recall` falls to ``level`` (bisection in log N)."""
    lo, hi = 1.0, 1e7
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if predicted_recall(mid, d_k, d_v) >= level else (lo, mid)
    return math.sqrt(lo * hi)


def crossing(ns: list[int], acc: list[float], level: float = 0.5) -> float:
    """First N where accuracy falls below ``level``, interpolated in log N (inf if never)."""
    for (n0, a0), (n1, a1) in zip(zip(ns, acc), zip(ns[1:], acc[1:])):
        if a0 >= level > a1:
            f = (a0 - level) / (a0 - a1)
            return math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0)))
    return float("inf") if acc[-1] >= level else float(ns[0])


def run(config: MemoryCapacityConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Recall of random Hebbian memories (and softmax attention) against the load, per key width.
    Settings: :class:`MemoryCapacityConfig`."""
    cfg = MemoryCapacityConfig.make(config, **overrides)
    d_ks, d_v, trials, beta, seed = cfg.d_ks, cfg.d_v, cfg.trials, cfg.beta, cfg.seed
    gen = torch.Generator().manual_seed(seed)
    measured: dict = {"by_dk": {}}
    records: list[dict] = []
    with progress_bar("memory-capacity", len(d_ks) * len(MULTIPLES), quiet=quiet) as advance:
        for d_k in d_ks:
            ns = sorted({max(2, round(m * d_k)) for m in MULTIPLES})
            lin_acc, soft_acc = [], []
            for n in ns:
                runs = [recall(n, d_k, d_v, gen, beta) for _ in range(trials)]
                records += [{"d_k": d_k, "n": n, "trial": t, "linear_acc": r[0], "softmax_acc": r[1]} for t, r in enumerate(runs)]
                lin_acc.append(sum(r[0] for r in runs) / trials)
                soft_acc.append(sum(r[1] for r in runs) / trials)
                advance()
            measured["by_dk"][str(d_k)] = {
                "n": ns,
                "linear_acc": lin_acc,
                "softmax_acc": soft_acc,
                "n50": crossing(ns, lin_acc),
                "acc_at_8dk": lin_acc[ns.index(8 * d_k)],
                "softmax_acc_at_8dk": soft_acc[ns.index(8 * d_k)],
                "predicted_n50": predicted_n50(d_k, d_v),
                "predicted_acc": [predicted_recall(n, d_k, d_v) for n in ns],
            }
    xs = [math.log(d) for d in d_ks]
    n50 = [measured["by_dk"][str(d)]["n50"] for d in d_ks]
    if all(math.isfinite(v) and v > 0 for v in n50) and len(d_ks) >= 2:
        ys = [math.log(v) for v in n50]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)
    else:
        slope = float("nan")
    measured["n50_slope"] = slope
    measured["n50_over_dk"] = [v / d for v, d in zip(n50, d_ks)]
    res = lab_result(NAME, measured, cfg.record(multiples=list(MULTIPLES)), records)
    if not quiet:
        rows = [
            [
                d,
                measured["by_dk"][str(d)]["n50"],
                measured["by_dk"][str(d)]["predicted_n50"],
                measured["by_dk"][str(d)]["n50"] / d,
                measured["by_dk"][str(d)]["acc_at_8dk"],
                measured["by_dk"][str(d)]["softmax_acc_at_8dk"],
            ]
            for d in d_ks
        ]
        print_table(
            f"Hebbian memory capacity (log-log slope of N_50 vs d_k = {slope:.3f})",
            ["d_k", "N_50", "predicted N_50", "N_50 / d_k", "linear recall at N=8·d_k", "softmax recall at N=8·d_k"],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    for d, m in res.measured["by_dk"].items():
        (line,) = ax1.plot([n / int(d) for n in m["n"]], m["linear_acc"], marker="o", label=f"linear d_k={d}")
        ax1.plot([n / int(d) for n in m["n"]], m["softmax_acc"], ls="--", color=line.get_color(), alpha=0.5)
        if "predicted_acc" in m:
            ax1.plot([n / int(d) for n in m["n"]], m["predicted_acc"], ls=":", color=line.get_color())
    ax1.axhline(0.5, ls=":", color="k")
    ax1.set(
        xscale="log",
        xlabel="stored pairs N / d_k",
        ylabel="recall accuracy",
        title="recall vs load (dashed: softmax, dotted: prediction)",
    )
    ax1.legend(fontsize=7)
    dks = [int(d) for d in res.measured["by_dk"]]
    ax2.loglog(dks, [res.measured["by_dk"][str(d)]["n50"] for d in dks], marker="o", label="N_50 measured")
    ax2.loglog(
        dks,
        [res.measured["by_dk"][str(d)].get("predicted_n50", float("nan")) for d in dks],
        ls=":",
        marker="x",
        label="crosstalk prediction",
    )
    ax2.set(xlabel="d_k", ylabel="N_50", title=f"capacity, slope {res.measured['n50_slope']:.2f}")
    ax2.legend(fontsize=7)
