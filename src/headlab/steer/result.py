"""What ``steer(...)`` returns: the JSON summary (a dict, as saved with ``--save``) with the per-item
records, a data frame and a figure.

The accuracies carry 95 % Wilson score intervals (Wilson 1927) and the steered − baseline difference a
paired percentile bootstrap interval with McNemar's exact test (McNemar 1947), all from
:mod:`headlab.stats`. The methods come from their papers: ZeroTuning (arXiv 2505.11739), ACT (arXiv
2406.15765), redistribute / reinforce / inject (see each edit's docstring in :mod:`headlab.edits`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes

from ..engine.frames import pandas
from ..report.figure import PlotFigure, new_figure

#: the accuracies a steering result can hold, in plot order, with their bar colours
ARMS = {"baseline": "#999999", "steered": "#3b75af", "icl": "#c98b2b"}


class SteerResult(dict):
    """The summary of one steering run (``method``, ``task``, ``results`` with ``[value, low, high]`` triples,
    ``tuning``, ``edits``, ...: exactly what ``--save`` writes) plus ``records``, one per evaluation item
    (``{"i", "baseline", "steered"[, "icl"], "baseline_output", "steered_output"}``, as ``STEM.items.jsonl``)."""

    def __init__(self, *args, records: Sequence[Mapping[str, Any]] | None = None, **kw):
        super().__init__(*args, **kw)
        self.records = [dict(r) for r in records or []]

    def to_frame(self):
        """pandas DataFrame, one row per evaluation item: item, baseline, steered (0/1 correct), icl when
        run, changed (steered != baseline), baseline_output, steered_output (needs ``headlab[frames]``)."""
        pd = pandas()
        cols = ["item", "baseline", "steered", *(["icl"] if any("icl" in r for r in self.records) else [])]
        rows = []
        for r in self.records:
            row = {"item": int(r["i"]), **{c: float(r[c]) for c in cols[1:]}}
            row["changed"] = row["steered"] != row["baseline"]
            row["baseline_output"] = r.get("baseline_output", "")
            row["steered_output"] = r.get("steered_output", "")
            rows.append(row)
        return pd.DataFrame(rows, columns=[*cols, "changed", "baseline_output", "steered_output"])

    def plot(self) -> PlotFigure:
        """Left: accuracy of baseline, steered (and few-shot ICL when run) with 95 % Wilson intervals; right:
        steered − baseline on the same items with its paired bootstrap interval and McNemar's p. A
        ``matplotlib.figure.Figure`` made without pyplot."""
        res = self.get("results")
        if not isinstance(res, Mapping) or "baseline" not in res:
            raise ValueError("this steering result has no 'results' (baseline / steered accuracies) to plot")
        fig = new_figure(7.5, 3.4)
        left, right = fig.subplots(1, 2, width_ratios=(2, 1))
        draw_accuracy(left, res)
        draw_difference(right, res)
        fig.suptitle(title(self), fontsize=9)
        return fig


def title(out: Mapping[str, Any]) -> str:
    res = out.get("results") or {}
    return f"{out.get('method', '?')} on {out.get('task', '?')} (n={res.get('n', out.get('eval_on', '?'))})"


def draw_accuracy(ax: Axes, res: Mapping[str, Any]) -> Axes:
    """Bars of the accuracies in ``res`` (``{arm: [value, low, high]}``) with their 95 % Wilson intervals."""
    names = [n for n in ARMS if n in res]
    means = [res[n][0] for n in names]
    err = [[res[n][0] - res[n][1] for n in names], [res[n][2] - res[n][0] for n in names]]
    ax.bar(names, means, yerr=err, capsize=6, color=[ARMS[n] for n in names])
    ax.set_ylabel("accuracy (95% Wilson interval)")
    ax.set_ylim(0, 1)
    return ax


def draw_difference(ax: Axes, res: Mapping[str, Any]) -> Axes:
    """steered − baseline (``res["difference"]`` = [value, low, high], paired bootstrap) as a point with its
    interval; the McNemar p-value from ``res["stats"]`` when present."""
    v, lo, hi = res["difference"]
    ax.errorbar([0], [v], yerr=[[v - lo], [hi - v]], fmt="o", color=ARMS["steered"], capsize=6)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks([0], ["steered − baseline"])
    ax.set_xlim(-1, 1)
    ax.set_ylabel("accuracy difference (95% paired bootstrap)")
    p = ((res.get("stats") or {}).get("difference") or {}).get("mcnemar_p")
    if p is not None:
        ax.set_title(f"McNemar p = {p:.2g}", fontsize=8)
    return ax
