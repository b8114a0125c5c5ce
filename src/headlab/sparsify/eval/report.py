"""The report of ``headlab sparsify eval``: a markdown table (Wilson 95 % intervals, exact McNemar
tests vs dense and a baseline), a plot of passkey accuracy and prefill speedup against density
and of the key's log-probability against needle depth, and ``results.json``; with per-head plans
also the quality-vs-KV-memory Pareto plot (``pareto``; MoA, arXiv 2406.14909; the matched-density
StreamingLLM control, arXiv 2309.17453).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...report.figure import PlotFigure
    from .runner import Row


def _num(x: float, fmt: str = ".2f", suffix: str = "") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{fmt}}{suffix}"


def _vs(pair: Sequence[int], pvalue: float) -> str:
    """'+a/−b, p=…': prompts only this config got right / only the other did, exact McNemar p."""
    return "–" if math.isnan(pvalue) else f"+{pair[0]}/−{pair[1]}, p={pvalue:.2g}"


def format_table(rows: Sequence[Row]) -> str:
    """Markdown table; with per-head plans among the rows it adds KV-cache, decode and McNemar columns."""
    if not any(r.kind == "plan" for r in rows):
        lines = [
            "| length | config | density | model density | passkey acc [95% CI] | key log-prob | ppl | prefill s | speedup |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r.length} | {r.label} | {r.density:.3f} | {r.model_density:.3f} | "
                f"{r.accuracy:.2f} ({round(r.accuracy * r.trials)}/{r.trials}) [{_num(r.acc_ci[0])}, {_num(r.acc_ci[1])}] | "
                f"{r.answer_logprob:.2f} | {r.ppl:.2f} | {r.prefill_s:.2f} | {r.speedup:.2f}x |"
            )
        return "\n".join(lines)
    with_base = any(r.baseline for r in rows)
    head = (
        "| length | config | method | budget | KV fraction | KV MiB (measured) | density | passkey [95% CI] | vs dense | "
        + ("vs baseline | " if with_base else "")
        + "key log-prob | ppl | prefill s | prefill speedup | decode tok/s [range] | decode speedup | cache |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        method = r.plan.get("method") or ("dense" if r.kind == "dense" else "pattern")
        mib = _num(r.kv_bytes / 2**20)
        if not math.isnan(r.kv_bytes_measured):
            mib += f" ({r.kv_bytes_measured / 2**20:.2f})"
        dec = _num(r.decode_tok_s, ".1f")
        if r.decode_tok_s_range:
            dec += f" [{r.decode_tok_s_range[0]:.1f}–{r.decode_tok_s_range[1]:.1f}]"
        cache = r.cache + (" (fallback)" if r.cache_note and r.kind == "plan" else "") if r.cache else "–"
        lines.append(
            f"| {r.length} | {r.label} | {method} | {_num(r.plan.get('budget'), 'g')} | {r.kv_fraction:.3f} | {mib} | "
            f"{r.density:.3f} | {r.correct}/{r.trials} [{_num(r.acc_ci[0])}, {_num(r.acc_ci[1])}] | "
            f"{_vs(r.vs_dense, r.p_vs_dense)} | "
            + (f"{_vs(r.vs_baseline, r.p_vs_baseline) + (' vs ' + r.baseline if r.baseline else '')} | " if with_base else "")
            + f"{r.answer_logprob:.2f} | {r.ppl:.2f} | {r.prefill_s:.2f} | {r.speedup:.2f}x | {dec} | "
            f"{_num(r.decode_speedup, '.2f', 'x')} | {cache} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[Row], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...io import atomic_write_bytes

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    longest = max(r.length for r in rows)
    for r in rows:
        if r.length == longest and r.by_depth:
            pts = sorted(r.by_depth)
            axes[2].plot(
                [p[0] for p in pts],
                [p[2] for p in pts],
                marker="o",
                ms=3,
                lw=1,
                label=r.label.split(" [")[0][:28] + (" (matched)" if " [" in r.label else ""),
            )
    axes[2].set(
        xlabel="needle depth in the prompt",
        ylabel="mean log-prob of the key's tokens",
        title=f"passkey key log-prob vs depth at {longest} tokens",
    )
    for n in sorted({r.length for r in rows}):
        rs = [r for r in rows if r.length == n]
        for ax, key in zip(axes, ("accuracy", "speedup")):
            ax.scatter([r.density for r in rs], [getattr(r, key) for r in rs], label=f"{n} tokens")
            for r in rs:
                ax.annotate(
                    r.label.split(" [")[0][:22],
                    (r.density, getattr(r, key)),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    axes[0].set(
        xlabel="pattern density (causal pairs kept)",
        ylabel="passkey accuracy",
        ylim=(-0.05, 1.05),
        title="passkey accuracy vs density",
    )
    axes[1].set(
        xlabel="pattern density (causal pairs kept)",
        ylabel="prefill speedup vs dense SDPA",
        title="whole-model prefill speedup vs density",
    )
    axes[1].axhline(1.0, color="grey", lw=0.8)
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _json_safe(x):
    """NaN/inf -> None (JSON has no NaN), recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_report(rows: Sequence[Row], out_dir, command: str = "") -> Path:
    """results.json, table.md, plot.png and, when per-head plans are among the rows, plot_pareto.png
    (passkey accuracy and key log-prob vs KV-cache fraction) in ``out_dir`` (each written atomically)."""
    from ...io import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", _json_safe({"command": command, "rows": [asdict(r) for r in rows]}))
    atomic_write_text(out / "table.md", (f"`{command}`\n\n" if command else "") + format_table(rows) + "\n")
    plot(rows, out / "plot.png")
    if any(r.kind == "plan" for r in rows):
        from .pareto import plot_pareto

        plot_pareto(rows, out / "plot_pareto.png")
    return out


#: Row fields that hold lists or dicts (per-trial detail): left out of ``EvalResult.to_frame()``
DETAIL_FIELDS = ("by_depth", "acc_ci", "vs_dense", "vs_baseline", "decode_tok_s_range", "decode_by_prompt", "plan")
#: the first columns of ``EvalResult.to_frame()``, in order; the other scalar Row fields follow
FRAME_FIRST = (
    "length",
    "label",
    "kind",
    "method",
    "budget",
    "density",
    "model_density",
    "kv_fraction",
    "kv_bytes",
    "accuracy",
    "acc_low",
    "acc_high",
    "correct",
    "trials",
    "answer_logprob",
    "ppl",
)


def _method(r: Row) -> str:
    return str((r.plan or {}).get("method") or ("dense" if r.kind == "dense" else r.kind))


class EvalResult(list):
    """What ``sparsify.evaluate`` returns: its :class:`~headlab.sparsify.eval.runner.Row` list (one per
    configuration and length: dense, each pattern or per-head plan, the matched-density StreamingLLM control
    of arXiv 2309.17453), with ``to_frame()`` and ``plot()``. Accuracies carry Wilson 95 % intervals;
    per-head plans follow MoA (arXiv 2406.14909) and DuoAttention (arXiv 2410.10819)."""

    def to_frame(self):
        """pandas DataFrame, one row per (length, configuration): length, label, kind, method, budget,
        density, model_density, kv_fraction, kv_bytes, accuracy with its interval (acc_low, acc_high),
        correct / trials, key log-prob, perplexity, then timing and decode columns (``headlab[frames]``)."""
        from ...engine.frames import pandas

        data = []
        for r in self:
            d = {k: v for k, v in asdict(r).items() if k not in DETAIL_FIELDS}
            d["acc_low"], d["acc_high"] = (float(x) for x in r.acc_ci)
            d["method"] = _method(r)
            d["budget"] = (r.plan or {}).get("budget")
            data.append(d)
        rest = [k for k in (data[0] if data else {}) if k not in FRAME_FIRST]
        return pandas().DataFrame(data, columns=[*FRAME_FIRST, *rest])

    def plot(self) -> PlotFigure:
        """Passkey accuracy (Wilson 95 % bars) of every configuration against model density (left) and
        against KV-cache bytes (right; patterns keep the full cache, per-head plans only their spans), one
        figure row per length; a ``matplotlib.figure.Figure`` made without pyplot."""
        from ...report.figure import new_figure
        from .pareto import METHOD_STYLE, OTHER_STYLE

        if not self:
            raise ValueError("nothing to plot: the evaluation has no rows")
        lengths = sorted({r.length for r in self})
        fig = new_figure(11, 4.2 * len(lengths))
        axes = fig.subplots(len(lengths), 2, squeeze=False)
        use_bytes = any(r.kv_bytes for r in self)
        for (ax_d, ax_kv), n in zip(axes, lengths):
            for r in (r for r in self if r.length == n):
                matched = " [matched to" in r.label
                method = _method(r)
                if method == "dense":
                    colour, marker = "black", "*"
                elif matched:
                    colour, marker = "grey", "s"
                elif r.kind == "pattern":
                    colour, marker = "tab:cyan", "o"
                else:
                    colour, marker = METHOD_STYLE.get(method, OTHER_STYLE)
                y = r.accuracy
                err = [[max(0.0, y - r.acc_ci[0])], [max(0.0, r.acc_ci[1] - y)]] if not math.isnan(r.acc_ci[0]) else None
                kv = r.kv_bytes / 2**20 if use_bytes else r.kv_fraction
                name = r.label.split(" [")[0][:22] + (" (matched)" if matched else "")
                for ax, x in ((ax_d, r.model_density), (ax_kv, kv)):
                    ax.errorbar([x], [y], yerr=err, color=colour, marker=marker, ms=8 if method == "dense" else 6, capsize=3)
                    ax.annotate(name, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
            ax_d.set(
                xlabel="model density (causal pairs kept, dense layers count 1)",
                ylabel="passkey accuracy (Wilson 95 %)",
                ylim=(-0.05, 1.05),
                title=f"accuracy vs density at {n} tokens",
            )
            ax_kv.set(
                xlabel="KV-cache MiB" if use_bytes else "KV-cache bytes / dense",
                ylabel="passkey accuracy (Wilson 95 %)",
                ylim=(-0.05, 1.05),
                title=f"accuracy vs KV memory at {n} tokens",
            )
            for ax in (ax_d, ax_kv):
                ax.grid(alpha=0.3)
        return fig
