"""Files and plot of ``headlab circuits attribution``: DIR/attribution.json (config, per-item records,
summary), DIR/records.jsonl (one line per item) and DIR/attribution.png (per-head Spearman ρ of the
final query's attention with integrated-gradients saliency, layer × head; per-view agreement with each
saliency, mean and 95 % bootstrap interval)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text, png_bytes
from .attribution import SALIENCIES, VIEWS


def attribution_png(summary: dict, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.array(summary["per_head"]["ig"]["spearman"], dtype=np.float64)  # (L, H), None -> nan
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5), constrained_layout=True, gridspec_kw={"width_ratios": [1, 1.4, 1.4]})
    lim = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    im = axes[0].imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
    axes[0].set_xlabel("head")
    axes[0].set_ylabel("layer")
    axes[0].set_xticks(range(grid.shape[1]))
    axes[0].set_title("per-head Spearman ρ(attention, IG), item mean")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    for ax, metric in zip(axes[1:], ("spearman", "coverage"), strict=True):
        labels, vals, errs = [], [], [[], []]
        for v in VIEWS:
            for s in SALIENCIES:
                num = summary["aggregated"][v][s][metric]
                val = np.nan if num["value"] is None else num["value"]
                lo, hi = num["ci"] or (val, val)
                labels.append(f"{v} vs {s}")
                vals.append(val)
                errs[0].append(max(val - lo, 0.0))
                errs[1].append(max(hi - val, 0.0))
        for pair, nums in summary["saliency_pairs"].items():
            num = nums[metric]
            val = np.nan if num["value"] is None else num["value"]
            lo, hi = num["ci"] or (val, val)
            labels.append(pair.replace("~", " vs "))
            vals.append(val)
            errs[0].append(max(val - lo, 0.0))
            errs[1].append(max(hi - val, 0.0))
        colors = ["tab:blue"] * len(SALIENCIES) + ["tab:orange"] * len(SALIENCIES) + ["tab:gray"] * len(summary["saliency_pairs"])
        y = np.arange(len(labels))
        ax.barh(y, vals, xerr=errs, color=colors, alpha=0.8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        if metric == "coverage":
            ax.axvline(summary["chance_coverage"]["value"], color="k", ls="--", lw=0.8, label="chance k/T")
            ax.axvline(0.5, color="tab:red", ls=":", lw=0.8, label="half")
            ax.legend(fontsize=8, loc="lower right")
            ax.set_title("top-k coverage; blue: mean attention, orange: rollout, grey: saliency vs saliency")
        else:
            ax.axvline(0, color="k", lw=0.6)
            ax.set_title("Spearman ρ, mean and 95 % bootstrap interval")
        ax.title.set_fontsize(9)
    fig.suptitle(title)
    return png_bytes(fig, dpi=100)


def write(out: str | Path, config: dict, records: list[dict], summary: dict, command: str) -> dict[str, Path]:
    """Write the run's three files atomically into ``out``."""
    title = f"{config.get('model')}: attention at the final position vs saliency, {config['task']} (n={len(records)})"
    png = attribution_png(summary, title)
    with atomic_dir(out) as d:
        atomic_write_json(d / "attribution.json", {"command": command, "config": config, "summary": summary, "items": records})
        atomic_write_text(d / "records.jsonl", "".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
        atomic_write_bytes(d / "attribution.png", png)
    out = Path(out)
    return {"raw": out / "attribution.json", "records": out / "records.jsonl", "plot": out / "attribution.png"}


def table(summary: dict):
    """A rich table of the aggregated agreement (value [95 % interval])."""
    from rich.table import Table

    def cell(num: dict) -> str:
        if num["value"] is None:
            return "-"
        ci = f" [{num['ci'][0]:.2f}, {num['ci'][1]:.2f}]" if num["ci"] else ""
        return f"{num['value']:.3f}{ci}"

    tab = Table("attention", "saliency", "Spearman ρ", "Pearson r", "top-20 % coverage", "saliency mass", title="agreement")
    for v in VIEWS:
        for s in SALIENCIES:
            a = summary["aggregated"][v][s]
            tab.add_row(v, s, cell(a["spearman"]), cell(a["pearson"]), cell(a["coverage"]), cell(a["mass"]))
    for pair, a in summary["saliency_pairs"].items():
        x, y = pair.split("~")
        tab.add_row(f"({x})", y, cell(a["spearman"]), cell(a["pearson"]), cell(a["coverage"]), cell(a["mass"]))
    return tab
