"""The head atlas figure: one layer × head heatmap per metric, with each head's roles marked by letters.

:func:`draw_atlas` draws into a given Figure (``ScanResult.plot()``, the ``head_stats`` result's
``plot()``); :func:`atlas_png` writes it as ``atlas.png`` (``headlab scan --out``). No pyplot: nothing
here opens a window or changes the matplotlib backend of the process (a notebook keeps its own).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from matplotlib.figure import Figure

from ..io import atomic_write_bytes
from ..probes.roles import role_letters
from .figure import PlotFigure, new_figure

#: role -> one-letter mark, from the probe classes
ROLE_LETTER = role_letters()
#: heatmaps per figure row
COLS = 4
FigureT = TypeVar("FigureT", bound=Figure)


def atlas_size(n_layers: int, n_metrics: int) -> tuple[float, float]:
    """(width, height) in inches of an atlas of ``n_metrics`` heatmaps of ``n_layers`` rows."""
    cols = min(COLS, n_metrics)
    rows = math.ceil(n_metrics / cols)
    return max(3.2 * cols, 4.0), 0.22 * n_layers * rows + 1.4


def atlas_grid(recs: Sequence[dict], metric: str, n_layers: int, n_heads: int) -> np.ndarray:
    """(layers, heads) array of ``metric`` from atlas records; NaN where a head has no value."""
    grid = np.full((n_layers, n_heads), np.nan)
    for r in recs:
        if r.get(metric) is not None:
            grid[r["layer"], r["head"]] = r[metric]
    return grid


def draw_atlas(fig: FigureT, recs: Sequence[dict], metrics: Sequence[str], title: str = "") -> FigureT:
    """Draw one heatmap per metric (rows: layers, columns: heads, viridis) into ``fig``; role letters
    (``ROLE_LETTER``) mark each head's roles. ``recs``: atlas records ``{"layer", "head", metric..., "roles"}``."""
    if not recs or not metrics:
        raise ValueError(f"nothing to draw: {len(recs)} records, metrics {list(metrics)}")
    L = max(r["layer"] for r in recs) + 1
    H = max(r["head"] for r in recs) + 1
    n = len(metrics)
    cols = min(COLS, n)
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        grid = atlas_grid(recs, m, L, H)
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(H))
        fig.colorbar(im, ax=ax, fraction=0.05)
        for r in recs:
            letters = "".join(ROLE_LETTER[x] for x in r.get("roles", []) if x in ROLE_LETTER)
            if letters:
                ax.text(r["head"], r["layer"], letters, ha="center", va="center", fontsize=5, color="white")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if any(r.get("roles") for r in recs):
        legend = "  ".join(f"{v}={k}" for k, v in ROLE_LETTER.items())
        title = f"{title}\nroles: {legend}"
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def atlas_figure(recs: Sequence[dict], metrics: Sequence[str], title: str = "") -> PlotFigure:
    """A new figure with :func:`draw_atlas`'s heatmaps, sized to the model."""
    L = max((r["layer"] for r in recs), default=0) + 1
    return draw_atlas(new_figure(*atlas_size(L, len(metrics))), recs, metrics, title)


def atlas_png(path: Path, recs: list[dict], metrics: list[str], title: str = "") -> Path:
    """Write the atlas of ``recs`` as a PNG file (atomically); returns the path."""
    fig = atlas_figure(recs, metrics, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return atomic_write_bytes(path, buf.getvalue())


def choose_metrics(metric: str | Sequence[str] | None, valid: Sequence[str], what: str = "this result") -> list[str]:
    """The metrics a ``plot(metric=...)`` call asks for: None = all of ``valid``; a name, a comma list or a
    list of names; anything else is a ValueError that names the valid ones."""
    valid = list(valid)
    if metric is None:
        return valid
    names = [m.strip() for m in metric.split(",")] if isinstance(metric, str) else list(metric)
    bad = [m for m in names if m not in valid]
    if bad or not names:
        raise ValueError(f"unknown metric {(bad or names)!r}: {what} has {', '.join(valid)}")
    return names
