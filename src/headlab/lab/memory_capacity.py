"""Experiment ``memory-capacity``: recall accuracy of the linear-attention (Hebbian) associative memory vs
the number of stored pairs N, for several key widths d_k (SPEC §D8: "Linear attention as Hebbian /
Pavlovian associative memory", 2025 — capacity O(d_k)).

N random unit keys (d_k) and N random unit values (d_v) are written as M = Σ_j v_j k_j^T
(:func:`headlab.modules.hebbian_write`); each stored key is read back, ŷ = M k_m, and counts as recalled
when its nearest stored value by cosine is v_m.  Softmax attention over the same pairs (ŷ = V^T
softmax(β K k_m), β = ``beta``) is measured alongside for contrast.  Accuracies average ``trials`` seeds.

Capacity N_50(d_k) = number of pairs where recall accuracy crosses 50% (log-linear interpolation).
Rule: reproduced iff the log-log slope of N_50 against d_k is within [0.7, 1.3] (linear scaling) and
recall at N = 8·d_k is below 50% for every d_k (the memory saturates at a small multiple of d_k).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from headlab.modules.linear import hebbian_read, hebbian_write

from .progress import progress_bar
from .result import LabResult, print_table

NAME = "memory-capacity"
CLAIM = ("Linear attention is a Hebbian associative memory M = Σ v kᵀ whose capacity is O(d_k): recall "
         "fails once the number of stored pairs exceeds a small multiple of the key width (SPEC §D8).")
RULE = ("reproduced iff the log-log slope of the 50%-recall capacity N_50 against d_k lies in [0.7, 1.3] "
        "and recall at N = 8·d_k is < 50% for every d_k.")
MULTIPLES = (0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16)


def recall(n: int, d_k: int, d_v: int, gen: torch.Generator, beta: float) -> tuple[float, float]:
    """(linear, softmax) recall accuracy for one random memory of n pairs."""
    keys = F.normalize(torch.randn(n, d_k, generator=gen), dim=-1)
    vals = F.normalize(torch.randn(n, d_v, generator=gen), dim=-1)
    lin = hebbian_read(hebbian_write(keys, vals), keys)                    # (n, d_v)
    soft = (beta * keys @ keys.T).softmax(-1) @ vals
    target = torch.arange(n)
    acc = lambda y: (F.normalize(y, dim=-1) @ vals.T).argmax(-1).eq(target).float().mean().item()
    return acc(lin), acc(soft)


def crossing(ns: list[int], acc: list[float], level: float = 0.5) -> float:
    """First N where accuracy falls below ``level``, interpolated in log N (inf if never)."""
    for (n0, a0), (n1, a1) in zip(zip(ns, acc), zip(ns[1:], acc[1:])):
        if a0 >= level > a1:
            f = (a0 - level) / (a0 - a1)
            return math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0)))
    return float("inf") if acc[-1] >= level else float(ns[0])


def run(d_ks: tuple[int, ...] = (16, 32, 64, 128), d_v: int = 64, trials: int = 5, beta: float = 16.0,
        seed: int = 0, quiet: bool = False) -> LabResult:
    gen = torch.Generator().manual_seed(seed)
    measured: dict = {"by_dk": {}}
    with progress_bar("memory-capacity", len(d_ks) * len(MULTIPLES), quiet) as advance:
        for d_k in d_ks:
            ns = sorted({max(2, round(m * d_k)) for m in MULTIPLES})
            lin_acc, soft_acc = [], []
            for n in ns:
                runs = [recall(n, d_k, d_v, gen, beta) for _ in range(trials)]
                lin_acc.append(sum(r[0] for r in runs) / trials)
                soft_acc.append(sum(r[1] for r in runs) / trials)
                advance()
            measured["by_dk"][str(d_k)] = {"n": ns, "linear_acc": lin_acc, "softmax_acc": soft_acc,
                                           "n50": crossing(ns, lin_acc),
                                           "acc_at_8dk": lin_acc[ns.index(8 * d_k)],
                                           "softmax_acc_at_8dk": soft_acc[ns.index(8 * d_k)]}
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
    reproduced = (0.7 <= slope <= 1.3 if math.isfinite(slope) else False) and all(
        measured["by_dk"][str(d)]["acc_at_8dk"] < 0.5 for d in d_ks)
    res = LabResult(NAME, CLAIM, measured, bool(reproduced), RULE,
                    dict(d_ks=list(d_ks), d_v=d_v, trials=trials, beta=beta, multiples=list(MULTIPLES), seed=seed))
    if not quiet:
        rows = [[d, measured["by_dk"][str(d)]["n50"], measured["by_dk"][str(d)]["n50"] / d,
                 measured["by_dk"][str(d)]["acc_at_8dk"], measured["by_dk"][str(d)]["softmax_acc_at_8dk"]] for d in d_ks]
        print_table(f"Hebbian memory capacity (log-log slope of N_50 vs d_k = {slope:.3f})",
                    ["d_k", "N_50", "N_50 / d_k", "linear recall at N=8·d_k", "softmax recall at N=8·d_k"], rows, res)
    return res


def plot(res: LabResult, fig) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    for d, m in res.measured["by_dk"].items():
        line, = ax1.plot([n / int(d) for n in m["n"]], m["linear_acc"], marker="o", label=f"linear d_k={d}")
        ax1.plot([n / int(d) for n in m["n"]], m["softmax_acc"], ls="--", color=line.get_color(), alpha=0.5)
    ax1.axhline(0.5, ls=":", color="k")
    ax1.set(xscale="log", xlabel="stored pairs N / d_k", ylabel="recall accuracy",
            title="recall vs load (dashed: softmax)")
    ax1.legend(fontsize=7)
    dks = [int(d) for d in res.measured["by_dk"]]
    ax2.loglog(dks, [res.measured["by_dk"][str(d)]["n50"] for d in dks], marker="o", label="N_50 measured")
    ax2.loglog(dks, [res.measured["by_dk"][str(dks[0])]["n50"] * d / dks[0] for d in dks], ls=":", label="slope 1")
    ax2.set(xlabel="d_k", ylabel="N_50", title=f"capacity, slope {res.measured['n50_slope']:.2f}")
    ax2.legend(fontsize=7)
