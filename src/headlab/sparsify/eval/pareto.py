"""Quality vs KV-cache memory of per-head plans: the Pareto plot of ``headlab sparsify eval --plan``.

Left panel: passkey accuracy (Wilson 95 % bars) vs KV-cache bytes as a fraction of dense; right
panel: mean log-probability of the key's tokens (a graded signal when accuracies tie). One colour
and marker per planning method (duo, moa, retrieval, uniform, random — read from the plan's meta),
each point annotated with its budget, dense at 1.0, and the grey step line through the points no
other point beats on both axes (the frontier). As in MoA (arXiv 2406.14909) and the retrieval-head
work (arXiv 2404.15574), what matters is which method reaches dense quality at the least memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

METHOD_STYLE = {  # method -> (colour, marker)
    "duo": ("tab:blue", "o"),
    "moa": ("tab:orange", "s"),
    "retrieval": ("tab:green", "^"),
    "uniform": ("tab:red", "D"),
    "random": ("tab:purple", "v"),
}
OTHER_STYLE = ("tab:brown", "P")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost x, quality y) that no other point dominates (x' <= x and y' >= y,
    one strictly), sorted by x. Points with a NaN coordinate are never on the front."""
    ok = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    front = []
    for i in ok:
        xi, yi = points[i]
        dominated = any(
            points[j][0] <= xi and points[j][1] >= yi and (points[j][0] < xi or points[j][1] > yi) for j in ok if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def _method(r) -> str:
    if r.kind == "dense":
        return "dense"
    return str((r.plan or {}).get("method") or "plan")


def plot_pareto(rows, path) -> None:
    """Write the Pareto plot of the dense and plan rows (one figure row per length) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...io import atomic_write_png

    rows = [r for r in rows if r.kind in ("dense", "plan")]
    if not rows:
        raise ValueError("plot_pareto needs dense or plan rows, got none")
    lengths = sorted({r.length for r in rows})
    fig, axes = plt.subplots(len(lengths), 2, figsize=(13, 4.6 * len(lengths)), squeeze=False)
    for (ax_acc, ax_lp), n in zip(axes, lengths):
        rs = [r for r in rows if r.length == n]
        for ax, key in ((ax_acc, "accuracy"), (ax_lp, "answer_logprob")):
            pts = [(r.kv_fraction, getattr(r, key)) for r in rs]
            front = pareto_front(pts)
            if len(front) > 1:
                ax.step(
                    [pts[i][0] for i in front],
                    [pts[i][1] for i in front],
                    where="post",
                    color="grey",
                    lw=1,
                    ls="--",
                    label="frontier",
                    zorder=1,
                )
            by_method: dict[str, list] = {}
            for r in rs:
                by_method.setdefault(_method(r), []).append(r)
            for method, mrs in by_method.items():
                mrs = sorted(mrs, key=lambda r: r.kv_fraction)
                colour, marker = ("black", "*") if method == "dense" else METHOD_STYLE.get(method, OTHER_STYLE)
                xs, ys = [r.kv_fraction for r in mrs], [getattr(r, key) for r in mrs]
                if key == "accuracy":
                    err = [
                        [max(0.0, y - r.acc_ci[0]) for y, r in zip(ys, mrs)],
                        [max(0.0, r.acc_ci[1] - y) for y, r in zip(ys, mrs)],
                    ]
                    ax.errorbar(
                        xs,
                        ys,
                        yerr=err,
                        color=colour,
                        marker=marker,
                        ms=8 if method == "dense" else 6,
                        lw=1,
                        capsize=3,
                        label=method,
                        zorder=3,
                    )
                else:
                    ax.plot(xs, ys, color=colour, marker=marker, ms=8 if method == "dense" else 6, lw=1, label=method, zorder=3)
                for r, x, y in zip(mrs, xs, ys):
                    budget = (r.plan or {}).get("budget")
                    text = "dense" if method == "dense" else (f"{budget:g}" if isinstance(budget, (int, float)) else r.label[:16])
                    ax.annotate(text, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax_acc.set(
            xlabel="KV-cache bytes / dense",
            ylabel="passkey accuracy (Wilson 95 %)",
            ylim=(-0.05, 1.05),
            title=f"passkey accuracy vs KV memory at {n} tokens",
        )
        ax_lp.set(
            xlabel="KV-cache bytes / dense",
            ylabel="mean log-prob of the key's tokens",
            title=f"key log-prob vs KV memory at {n} tokens (annotated: budget)",
        )
        for ax in (ax_acc, ax_lp):
            ax.set_xlim(0, 1.08)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    atomic_write_png(path, fig, dpi=120)
