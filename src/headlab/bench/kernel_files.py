"""The per-sample records and the plot that ``headlab bench kernels`` writes beside ``kernels.json`` and
``BENCHMARKS.md`` (``kernels.records.jsonl``, ``kernels.png``), so that its run folder is a complete result
folder for ``headlab reproduce bench-kernels``."""

from __future__ import annotations

import json
from pathlib import Path


def records(doc: dict) -> str:
    """One JSON line per timed call: row, kind (dense / kernel), round, wall and CPU seconds, backend that ran.
    ``doc`` is :func:`headlab.bench.kernels.to_json`'s output."""
    lines = []
    for section, rows in (("rows", doc["rows"]), ("flex", doc.get("flex") or [])):
        for r in rows:
            ran = r.get("backend", "flex")
            for kind, s in r["samples"].items():
                cpu = s.get("cpu") or [None] * len(s["wall"])
                for i, (w, c) in enumerate(zip(s["wall"], cpu)):
                    lines.append(
                        json.dumps(
                            {
                                "section": section,
                                "row": r["name"],
                                "kind": kind,
                                "round": i,
                                "ran": ran if kind == "kernel" else "sdpa",
                                "seconds": w,
                                "cpu_seconds": c,
                            }
                        )
                    )
    return "".join(x + "\n" for x in lines)


def plot(doc: dict, path: Path) -> None:
    """Achieved (wall) and theoretical speedup of every row, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(r["name"], r["achieved"], r["theoretical"], r["backend"]) for r in doc["rows"]]
    rows += [(f"{f['name']} [flex pinned]", f["achieved"], f["theoretical"], "flex") for f in doc.get("flex") or []]
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(rows) + 1.4))
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [r[2] for r in rows], color="#dddddd", label="theoretical (1 / density)")
    ax.barh(ys, [r[1] for r in rows], height=0.5, color="#3b6ea8", label="achieved (wall, median)")
    ax.set_yticks(ys, [f"{r[0]} ({r[3]})" for r in rows], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("speedup over dense causal SDPA")
    c = doc.get("conditions", {})
    ax.set_title(f"block-sparse kernels, T = {c.get('T')}, {c.get('threads')} threads", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
