"""atlas.png: one layer × head heatmap per metric, with each head's roles marked by letters."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io import atomic_write_bytes  # noqa: E402
from ..probes.roles import role_letters  # noqa: E402

#: role -> one-letter mark, from the probe classes
ROLE_LETTER = role_letters()


def atlas_png(path: Path, recs: list[dict], metrics: list[str], title: str = "") -> Path:
    L = max(r["layer"] for r in recs) + 1
    H = max(r["head"] for r in recs) + 1
    n = len(metrics)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 0.22 * L * rows + 1.4), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        grid = np.full((L, H), np.nan)
        for r in recs:
            if r.get(m) is not None:
                grid[r["layer"], r["head"]] = r[m]
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(H))
        fig.colorbar(im, ax=ax, fraction=0.05)
        for r in recs:
            letters = "".join(ROLE_LETTER[x] for x in r["roles"] if x in ROLE_LETTER)
            if letters:
                ax.text(r["head"], r["layer"], letters, ha="center", va="center", fontsize=5, color="white")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    legend = "  ".join(f"{v}={k}" for k, v in ROLE_LETTER.items())
    fig.suptitle(f"{title}\nroles: {legend}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
