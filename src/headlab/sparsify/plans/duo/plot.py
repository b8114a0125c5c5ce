"""duo-gates.png: the trained DuoAttention gates (arXiv 2410.10819) as a layer x KV-head heatmap,
the full heads of a plan outlined, next to the training loss curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ....io import atomic_write_png  # noqa: E402


def plot_gates(path, gates, losses, full=None, title: str = "") -> Path:
    """gates: (layers, KV heads); losses: per step (distill, reg term); full: (layer, head) pairs kept full."""
    g = np.asarray(gates, dtype=float)
    if g.ndim != 2 or g.size == 0:
        raise ValueError(f"gates must be a non-empty (layers, KV heads) table, got shape {g.shape}")
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, max(3.0, 0.2 * g.shape[0] + 1.2)), gridspec_kw={"width_ratios": [1, 2]})
    im = a.imshow(g, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    for li, h in full or ():
        a.add_patch(plt.Rectangle((h - 0.5, li - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
    a.set_xlabel("KV head")
    a.set_ylabel("layer")
    a.set_xticks(range(g.shape[1]))
    a.set_title("gate alpha (red: kept full)", fontsize=9)
    fig.colorbar(im, ax=a, fraction=0.08)
    steps = np.arange(1, len(losses) + 1)
    if len(losses):
        arr = np.asarray(losses, dtype=float)
        b.plot(steps, arr[:, 0], label="distillation (MSE of final hidden states)")
        b.plot(steps, arr[:, 1], label="reg x mean gate")
        b.plot(steps, arr.sum(1), label="total", linestyle="--")
        b.legend(fontsize=8)
    b.set_xlabel("step")
    b.set_ylabel("loss")
    b.set_title("gate training", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return atomic_write_png(path, fig)
