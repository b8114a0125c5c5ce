"""Find a task's heads by patching and write them as an atlas (heads.json / heads.csv / roles.json)
with a heatmap.

Steps for a :class:`~headlab.circuits.task.Task`: (1) baseline: clean and corrupted logit
difference and accuracy; (2) total effect of every head (``head_effects``, clean outputs patched
into the corrupted run); (3) direct effect on the logits; (4) attention between the task's named
positions on the clean prompts; (5) IOI only: path patching from the strongest earlier heads into
the name movers' queries (S-inhibition evidence); (6) headlab's previous-token and induction probes;
(7) roles (:mod:`headlab.circuits.classify`).
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..engine.hf import model_shape
from ..engine.sites import format_site, parse_site
from ..engine.view import HtmlView
from ..io import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text
from ..measure import patching
from ..measure.induction import induction_scores
from ..measure.stats import head_stats
from ..report.figure import PlotFigure, new_figure
from ..report.inline import head_view
from ..report.png import FigureT, choose_metrics
from .classify import THRESHOLDS, attention_between, classify
from .task import Task

#: one-letter marks of the classes in effects.png
LETTERS = {
    "name_mover": "N",
    "negative_name_mover": "n",
    "s_inhibition": "S",
    "induction": "I",
    "duplicate_token": "D",
    "previous_token": "P",
    "mover": "M",
}

ATTN_PAIRS = {
    "ioi": {"END->IO": ("END", "IO"), "END->S2": ("END", "S2"), "S2->S1": ("S2", "S1"), "S2->S1+1": ("S2", "S1+1")},
    "colored-objects": {"END->ANS": ("END", "ANS")},
}


@dataclass
class CircuitResult:
    """What :func:`find_circuit` returns for an IOI (Wang et al., arXiv 2211.00593) or Colored Objects
    (Merullo et al., arXiv 2310.08744) task: per-head (layers, heads) tensors of total and direct effect,
    attention between named positions, path patching into the name movers' queries, previous-token and
    induction scores, and each head's roles. ``records()`` / ``to_frame()`` one row per head, ``plot()``
    the heatmaps, ``show()`` the head grid in a notebook."""

    task: str
    model: str
    n: int
    baseline: dict[str, float]
    effect: torch.Tensor
    direct: torch.Tensor
    attn: dict[str, torch.Tensor]
    path_q: torch.Tensor
    prev_token: torch.Tensor
    induction: torch.Tensor
    roles: dict[str, list[str]]
    thresholds: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def records(self) -> list[dict]:
        """Atlas records {"layer", "head", "site", <metrics>, "roles"} (``headlab.edits`` selectors read them)."""
        L, H = self.effect.shape
        out = []
        for l in range(L):
            for h in range(H):
                r = {
                    "layer": l,
                    "head": h,
                    "site": format_site(l, h),
                    "effect": _f(self.effect[l, h]),
                    "direct": _f(self.direct[l, h]),
                    "path_q": _f(self.path_q[l, h]),
                    "prev_token": _f(self.prev_token[l, h]),
                    "induction": _f(self.induction[l, h]),
                }
                for k, v in self.attn.items():
                    r[attn_column(k)] = _f(v[l, h])
                r["roles"] = self.roles[format_site(l, h)]
                out.append(r)
        return out

    def in_circuit(self) -> set[tuple[int, int]]:
        return {(r["layer"], r["head"]) for r in self.records() if "in_circuit" in r["roles"]}

    def grids(self) -> dict[str, torch.Tensor]:
        """{column: (layers, heads) tensor} of every per-head value, named as in :meth:`records`."""
        out = {
            "effect": self.effect,
            "direct": self.direct,
            "path_q": self.path_q,
            "prev_token": self.prev_token,
            "induction": self.induction,
        }
        out.update({attn_column(k): v for k, v in self.attn.items()})
        return out

    def to_frame(self):
        """pandas DataFrame, one row per head: layer, head, site, effect, direct, path_q, prev_token,
        induction, attn_* and roles (space-separated), as heads.csv (needs ``headlab[frames]``)."""
        from ..engine.frames import pandas

        recs = self.records()
        return pandas().DataFrame([r | {"roles": " ".join(r["roles"])} for r in recs], columns=list(recs[0]))

    def plot(self, metric: str | list[str] | None = None) -> PlotFigure:
        """Per-head heatmaps (rows: layers, columns: heads) of ``metric`` (a name, a comma list or a list of
        :meth:`grids`' names; default total and direct effect), role letters on the first, as effects.png.
        Total effect: activation patching of each head's clean output into the corrupted run (Wang et al.,
        arXiv 2211.00593; Heimersheim & Nanda, arXiv 2404.15255); a ``matplotlib.figure.Figure`` (no pyplot)."""
        metrics = choose_metrics(metric if metric is not None else ["effect", "direct"], list(self.grids()), "this circuit")
        return draw_heads(new_figure(4.5 * len(metrics), 7), self, metrics)

    def show(self, head=None, metric: str = "effect") -> HtmlView:
        """The head grid coloured by ``metric`` (default the total effect) with each head's roles, and one head
        (``"L9H1"`` or (9, 1)) up close with all its values, as an :class:`~headlab.engine.view.HtmlView`."""
        roles = {parse_site(k): list(v) for k, v in self.roles.items()}
        return HtmlView(
            head_view(self.grids(), title=f"{self.model}: {self.task} circuit", metric=metric, head=head, roles=roles)
        )


def attn_column(pair: str) -> str:
    """The record column of an attention pair: "END->IO" -> "attn_END_to_IO", "S2->S1+1" -> "attn_S2_to_S1p1"."""
    return "attn_" + pair.replace("->", "_to_").replace("+", "p")


def _f(x) -> float | None:
    v = float(x)
    return None if v != v else round(v, 6)


def find_circuit(
    model,
    task: Task,
    model_name: str = "model",
    batch_heads: int | None = None,
    path_senders: int = 12,
    thresholds: dict[str, float] | None = None,
    progress: bool = False,
) -> CircuitResult:
    """Run the steps of the module docstring for ``task`` on ``model``."""
    L, H, _ = model_shape(model)
    secs: dict[str, float] = {}
    t0 = time.time()
    res = patching.head_effects(
        model,
        task.clean_ids,
        task.corrupt_ids,
        task.metric,
        clean_mask=task.mask,
        corrupt_mask=task.mask,
        batch_heads=batch_heads,
        progress=progress,
        full=True,
    )
    secs["head_effects"] = time.time() - t0
    clean_logits, corrupt_logits = res.clean_recording.logits, res.corrupt_recording.logits
    base = {
        "clean_logit_diff": float(task.metric(clean_logits)),
        "corrupt_logit_diff": float(task.metric(corrupt_logits)),
        "clean_accuracy": task.accuracy(clean_logits),
        "clean_top1": task.top1(clean_logits),
        "corrupt_accuracy": task.accuracy(corrupt_logits),
        "clean_logit_diff_std": float(task.logit_diff(clean_logits).std()),
    }
    t0 = time.time()
    direct = patching.direct_effects(
        model,
        res.clean_recording,
        res.corrupt_recording,
        task.corrupt_ids,
        task.metric,
        res.clean,
        res.corrupt,
        attention_mask=task.mask,
    )
    secs["direct_effects"] = time.time() - t0
    t0 = time.time()
    w = patching.record(model, task.clean_ids, "weights", task.mask)
    attn = {k: attention_between(w.data, task.columns(q), task.columns(kk), L, H) for k, (q, kk) in ATTN_PAIRS[task.name].items()}
    prev = head_stats(model, task.clean_ids, ["prev_token"], task.mask)["prev_token"]
    ind = induction_scores(model, n=25, batch=4)
    secs["attention_evidence"] = time.time() - t0
    t = dict(THRESHOLDS) | dict(thresholds or {})
    path_q = torch.full((L, H), float("nan"))
    if task.name == "ioi":
        pre = classify(res.effects, direct, attn, thresholds=t)
        movers = [k for k, r in pre.items() if "name_mover" in r]
        if movers:
            low = min(parse_site(m)[0] for m in movers)
            cand = [(l, h) for l in range(low) for h in range(H)]
            cand.sort(key=lambda s: -abs(float(torch.nan_to_num(res.effects[s], nan=0.0))))
            senders = cand[:path_senders]
            if senders:
                t0 = time.time()
                path_q = patching.path_patch(
                    model,
                    task.clean_ids,
                    task.corrupt_ids,
                    task.metric,
                    senders,
                    movers,
                    "q",
                    clean_mask=task.mask,
                    corrupt_mask=task.mask,
                    progress=progress,
                    recordings=(res.clean_recording, res.corrupt_recording),
                )
                secs["path_patching"] = time.time() - t0
    roles = classify(res.effects, direct, attn, path_q, prev, ind, thresholds=t)
    return CircuitResult(
        task.name,
        model_name,
        len(task),
        base,
        res.effects,
        direct,
        attn,
        path_q,
        prev,
        ind,
        roles,
        t,
        secs,
        meta={
            "example_clean": task.clean_texts[0],
            "example_corrupt": task.corrupt_texts[0],
            "tokens": int(task.clean_ids.shape[1]),
            **{k: v for k, v in task.meta.items() if k != "corrupt_names"},
        },
    )


#: per-head values with a sign (diverging colours centred on 0); the rest are shares in [0, 1]
SIGNED = ("effect", "direct", "path_q")
TITLES = {"effect": "total effect (patching)", "direct": "direct effect", "path_q": "path patching (queries)"}


def draw_heads(fig: FigureT, result: CircuitResult, metrics: list[str]) -> FigureT:
    """One heatmap per metric of ``result.grids()`` into ``fig``: signed values in RdBu centred on 0, shares in
    viridis; the first panel carries the role letters (``LETTERS``); the title states the baseline."""
    grids = result.grids()
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, name in zip(axes, metrics):
        t = grids[name].detach().float().cpu()
        if name in SIGNED:
            m = max(float(abs(torch.nan_to_num(t)).max()), 1e-6)
            im = ax.imshow(t.numpy(), cmap="RdBu", vmin=-m, vmax=m, aspect="auto")
        else:
            im = ax.imshow(t.numpy(), cmap="viridis", aspect="auto")
        ax.set_title(TITLES.get(name, name))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, shrink=0.6)
    for k, roles in result.roles.items():
        l, h = parse_site(k)
        mark = "".join(LETTERS[r] for r in roles if r in LETTERS)
        if mark:
            axes[0].text(h, l, mark, ha="center", va="center", fontsize=7)
    b = result.baseline
    fig.suptitle(
        f"{result.model}: {result.task} (n={result.n}; clean logit diff {b['clean_logit_diff']:.2f}, "
        f"acc {b['clean_accuracy']:.2f}; corrupt {b['corrupt_logit_diff']:.2f})\n"
        "effect 0 = corrupt run, 1 = clean run; letters: N name mover, S s-inhibition, I induction, "
        "D duplicate token, P previous token, M mover",
        fontsize=8,
    )
    return fig


def heatmap_png(result: CircuitResult) -> bytes:
    """effects.png: total and direct effect heatmaps with role letters (PNG bytes, no pyplot)."""
    fig = draw_heads(new_figure(9, 7), result, ["effect", "direct"])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write(result: CircuitResult, out: Path, extra: dict | None = None) -> dict[str, Path]:
    """Write heads.json (atlas records), heads.csv, roles.json ({site: roles}), summary.json, effects.png."""
    recs = result.records()
    summary = {
        "task": result.task,
        "model": result.model,
        "n": result.n,
        "baseline": result.baseline,
        "thresholds": result.thresholds,
        "seconds": result.seconds,
        "meta": result.meta,
        "roles": {
            r: sorted(k for k, v in result.roles.items() if r in v) for r in sorted({x for v in result.roles.values() for x in v})
        },
        **(extra or {}),
    }
    cols = list(recs[0])
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=cols)
    wr.writeheader()
    for r in recs:
        wr.writerow(r | {"roles": ";".join(r["roles"])})
    png = heatmap_png(result)
    with atomic_dir(out) as d:
        atomic_write_json(d / "heads.json", {"task": result.task, "model": result.model, "heads": recs})
        atomic_write_text(d / "heads.csv", buf.getvalue())
        atomic_write_json(d / "roles.json", {k: v for k, v in result.roles.items() if v})
        atomic_write_json(d / "summary.json", summary)
        atomic_write_bytes(d / "effects.png", png)
    return {n: Path(out) / n for n in ("heads.json", "heads.csv", "roles.json", "summary.json", "effects.png")}


def load_result(folder: Path) -> CircuitResult:
    """A :class:`CircuitResult` rebuilt from the files :func:`write` wrote (e.g. to redraw the plot)."""
    import json

    data = json.loads((Path(folder) / "heads.json").read_text())
    summ = json.loads((Path(folder) / "summary.json").read_text())
    recs = data["heads"]
    L, H = max(r["layer"] for r in recs) + 1, max(r["head"] for r in recs) + 1

    def grid(key: str) -> torch.Tensor:
        t = torch.full((L, H), float("nan"))
        for r in recs:
            if r.get(key) is not None:
                t[r["layer"], r["head"]] = r[key]
        return t

    attn = {k[5:].replace("_to_", "->").replace("p1", "+1"): grid(k) for k in recs[0] if k.startswith("attn_")}
    return CircuitResult(
        data["task"],
        data["model"],
        summ["n"],
        summ["baseline"],
        grid("effect"),
        grid("direct"),
        attn,
        grid("path_q"),
        grid("prev_token"),
        grid("induction"),
        {format_site(r["layer"], r["head"]): r["roles"] for r in recs},
        summ["thresholds"],
        summ["seconds"],
        summ["meta"],
    )


def load_effects(folder: Path) -> tuple[torch.Tensor, set[tuple[int, int]], dict]:
    """(effect (L, H), in-circuit set, heads.json) from a folder written by :func:`write`."""
    import json

    p = Path(folder) / "heads.json"
    if not p.is_file():
        raise ValueError(f"{str(p)!r} not found: run `headlab circuits ioi|colored-objects --out {folder}` first")
    data = json.loads(p.read_text())
    recs = data["heads"]
    L = max(r["layer"] for r in recs) + 1
    H = max(r["head"] for r in recs) + 1
    eff = torch.full((L, H), float("nan"))
    for r in recs:
        if r["effect"] is not None:
            eff[r["layer"], r["head"]] = r["effect"]
    circ = {(r["layer"], r["head"]) for r in recs if "in_circuit" in r["roles"]}
    return eff, circ, data
