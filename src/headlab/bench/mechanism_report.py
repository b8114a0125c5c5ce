"""Tables (markdown) and plots (PNG) of ``headlab bench mechanisms``, one per question, written atomically:

- ``speed.md`` / ``speed.png``: median seconds per call against length, per entry and CAB pattern;
- ``memory.md`` / ``memory.png``: peak resident-memory rise per call against length;
- ``efficiency.md`` / ``efficiency.png``: the efficiency length against the level's dense baseline (measured and
  from the fitted power laws);
- ``quality.md`` / ``quality.png``: MQAR and selective-copying accuracy, prose perplexity at one budget;
- ``mechanisms.json``: every number, the command, the seed and the machine.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io import atomic_dir, markdown_table, png_bytes  # noqa: E402
from .mechanisms import PATTERNS, Entry, Point, stop_key  # noqa: E402


def _fmt(x, unit: float = 1.0, nd: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x * unit:.{nd}f}"


def _header(title: str, meta: dict) -> str:
    return (
        f"# {title}\n\nCommand: `{meta['command']}`  \nSeed: {meta['seed']} · torch {meta['torch']} · "
        f"{meta['threads']} threads · {meta['machine']}\n\n"
    )


def grid_table(
    points: list[Point], stops: dict[str, str], ents: list[Entry], lengths: list[int], value: str, unit: float, nd: int
) -> str:
    by = {(p.level, p.entry, p.pattern, p.length): getattr(p, value) for p in points}
    lines = [
        "| entry | level | pattern | " + " | ".join(str(l) for l in lengths) + " | stopped / not supported |",
        "|" + "---|" * (len(lengths) + 4),
    ]
    for e in ents:
        for pat in PATTERNS:
            cells = [_fmt(by.get((e.level, e.name, pat, l)), unit, nd) for l in lengths]
            why = stops.get(stop_key(e.level, e.name, pat), "")
            lines.append(f"| {e.name} | {e.level} | {pat} | " + " | ".join(cells) + f" | {why} |")
    return "\n".join(lines) + "\n"


def efficiency_table(rows: list[dict]) -> str:
    columns = ["entry", "level", "pattern", "baseline", "measured efficiency length", "fitted efficiency length"]
    columns += ["slope (log t / log L)", "baseline slope", "note"]
    body = (
        [
            *(r[k] for k in ("entry", "level", "pattern", "baseline")),
            r["measured"] if r["measured"] is not None else "not within the lengths run",
            _fmt(r["fitted"], 1, 0),
            _fmt(r["slope"], 1, 2),
            _fmt(r["baseline_slope"], 1, 2),
            r["note"],
        ]
        for r in rows
    )
    return markdown_table(columns, body) + "\n"


def quality_table(rows: list[dict]) -> str:
    mechs = list(dict.fromkeys(r["mechanism"] for r in rows))
    by = {(r["task"], r["mechanism"]): r for r in rows}
    lines = [
        "| mechanism | MQAR accuracy | selective-copy accuracy | prose loss (nats/byte) | prose perplexity | "
        "train seconds (all tasks) |",
        "|---|---|---|---|---|---|",
    ]
    for m in mechs:
        mq, sc, pr = by.get(("mqar", m)), by.get(("selective-copy", m)), by.get(("prose", m))
        secs = sum(r["seconds"] for r in rows if r["mechanism"] == m)
        lines.append(
            f"| {m} | {_fmt(mq and mq['accuracy'], 1, 3)} | {_fmt(sc and sc['accuracy'], 1, 3)} | "
            f"{_fmt(pr and pr['loss'], 1, 3)} | {_fmt(pr and pr['perplexity'], 1, 2)} | {secs:.0f} |"
        )
    n = {r["task"]: r["positions"] for r in rows}
    lines.append("\nScored positions per mechanism: " + ", ".join(f"{k} {v}" for k, v in n.items()) + ".")
    return "\n".join(lines) + "\n"


def _png(fig) -> bytes:
    fig.tight_layout()
    return png_bytes(fig, dpi=100, metadata={"Software": None})


def curve_plot(points: list[Point], value: str, ylabel: str, scale: float, effs: list[dict] | None = None) -> bytes:
    panels = [("kernel", p) for p in PATTERNS] + [("module", "causal-self")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
    for ax, (level, pat) in zip(axes, panels):
        names = list(dict.fromkeys(p.entry for p in points if p.level == level and p.pattern == pat))
        for i, n in enumerate(names):
            ps = sorted((p for p in points if p.entry == n and p.pattern == pat and p.level == level), key=lambda p: p.length)
            ys = [getattr(p, value) * scale for p in ps]
            if all(y > 0 for y in ys):
                ax.plot(
                    [p.length for p in ps],
                    ys,
                    marker="o",
                    ms=3,
                    ls="-" if i < 10 else "--",
                    label=n,
                    lw=2.2 if n in ("sdpa", "softmax") else 1,
                )
        for r in effs or []:
            if r["level"] == level and r["pattern"] == pat and r["measured"] is not None:
                ax.axvline(r["measured"], color="grey", lw=0.5, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="length T", ylabel=ylabel, title=f"{level}: {pat}")
        ax.legend(fontsize=6)
    return _png(fig)


def efficiency_plot(rows: list[dict]) -> bytes:
    rs = [r for r in rows if r["fitted"] is not None and r["fitted"] > 0]
    fig, ax = plt.subplots(figsize=(9, 0.3 * max(4, len(rs)) + 1))
    labels = [f"{r['entry']} ({r['level']}, {r['pattern']})" for r in rs]
    ax.barh(range(len(rs)), [r["fitted"] for r in rs], color="tab:blue", label="fitted (power laws cross)")
    ms = [(i, r["measured"]) for i, r in enumerate(rs) if r["measured"] is not None]
    if ms:
        ax.scatter([m for _, m in ms], [i for i, _ in ms], color="tab:red", zorder=3, label="measured (first faster)")
    ax.set_yticks(range(len(rs)), labels, fontsize=7)
    ax.set(
        xscale="log",
        xlabel="efficiency length against dense SDPA (tokens)",
        title="Efficiency length: from here on the mechanism is faster than dense SDPA",
    )
    ax.legend(fontsize=7)
    return _png(fig)


def quality_plot(rows: list[dict]) -> bytes:
    tasks = [
        ("mqar", "accuracy", "MQAR accuracy"),
        ("selective-copy", "accuracy", "selective-copy accuracy"),
        ("prose", "perplexity", "prose perplexity (bytes)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, (task, key, title) in zip(axes, tasks):
        rs = [r for r in rows if r["task"] == task]
        ax.bar(range(len(rs)), [r[key] for r in rs], color="tab:green" if key == "accuracy" else "tab:purple")
        ax.set_xticks(range(len(rs)), [r["mechanism"] for r in rs], rotation=70, fontsize=7)
        ax.set(title=title)
    return _png(fig)


def write(
    out: str | Path,
    meta: dict,
    ents: list[Entry],
    lengths: list[int],
    points: list[Point],
    stops: dict[str, str],
    effs: list[dict],
    quality: list[dict],
) -> Path:
    """Write every table, plot and ``mechanisms.json`` into ``out`` (all or nothing)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    with atomic_dir(out) as stage:
        h = lambda t: _header(t, meta)  # noqa: E731
        note = (
            "Cells: median over the repeats after a warm-up; '—' = not run (see the last column). Cross patterns "
            "read a memory of S = 2T keys; causal cross is suffix-aligned.\n\n"
        )
        (stage / "speed.md").write_text(
            h("Speed against length (milliseconds per call)") + note + grid_table(points, stops, ents, lengths, "seconds", 1e3, 2)
        )
        (stage / "memory.md").write_text(
            h("Peak memory against length (MiB: rise of the peak resident set)")
            + note
            + grid_table(points, stops, ents, lengths, "peak_mib", 1, 1)
        )
        (stage / "efficiency.md").write_text(
            h("Efficiency length against dense SDPA") + "Measured: the first length run at which the entry is faster "
            "than the baseline of its level (kernel: torch SDPA; module: the softmax module, SDPA inside) under the same "
            "pattern. Fitted: where the power laws t = a L^b fitted to each (lengths >= 1024) cross.\n\n" + efficiency_table(effs)
        )
        if quality:
            (stage / "quality.md").write_text(
                h("Quality at one training budget") + json.dumps(meta["budget"]) + "\n\n" + quality_table(quality)
            )
            (stage / "quality.png").write_bytes(quality_plot(quality))
        (stage / "speed.png").write_bytes(curve_plot(points, "seconds", "seconds per call", 1.0, effs))
        (stage / "memory.png").write_bytes(curve_plot(points, "peak_mib", "peak memory rise (MiB)", 1.0))
        (stage / "efficiency.png").write_bytes(efficiency_plot(effs))
        doc = {
            **meta,
            "lengths": lengths,
            "entries": [{"name": e.name, "level": e.level, "what": e.what, "support": e.support} for e in ents],
            "points": [asdict(p) for p in points],
            "stops": stops,
            "efficiency": effs,
            "quality": quality,
        }
        (stage / "mechanisms.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    return out
