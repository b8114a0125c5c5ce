"""HeadHunter for text decoders: greedy search for the heads whose SoftPAG perturbation gives the best guidance.

Ahn et al. (arXiv 2506.10978) build the perturbed head set S greedily: start from S = ∅; in each round score
every remaining head h by the objective of images generated with S ∪ {h} perturbed and guided against; add the
best heads to S; repeat. Their objective is an image score (PickScore, ImageReward, a style score).

Text adaptation (ours): the objective is the mean log-probability of the right choice of a multiple-choice
task (label-word scoring: softmax over the first tokens of the choices) under the guided next-token logits
``l + s·(l − l_perturbed)`` (:mod:`headlab.steer.guidance`), on a tuning split; the result is reported on
a disjoint evaluation split. Optional coarse-to-fine pre-screen (ours, to bound the cost on a CPU): score
every layer with all its heads perturbed, and hunt single heads only in the best ``prescreen_layers`` layers.
The candidates of a round share forward passes (``perturbed_last_logits``). Ties are broken by (layer, head),
so a search is deterministic.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.tasks.base import Item
from ..engine.hf import model_shape
from ..engine.sites import format_site
from ..measure.record import encode_left
from ..models import DEFAULT_MODEL
from ..progress import Bar, progress_bar
from .evaluate import choice_ids
from .guidance import check_scale, check_u, forward_logits, guide, head_list, perturbed_last_logits


@dataclass
class ChoiceBatch:
    """Left-padded prompts of choice items with each item's choice token ids and gold index."""

    ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T)
    choices: list[list[int]]
    labels: list[int]


def choice_batch(tok, items: Sequence[Item], max_length: int = 2048) -> ChoiceBatch:
    if not items:
        raise ValueError("no items: give at least one choice item")
    bad = [i for i, it in enumerate(items) if not it.choices or it.label is None]
    if bad:
        raise ValueError(f"items {bad[:5]} are not choice items (need choices and label); HeadHunter scores choice tasks")
    enc = encode_left(tok, [it.prompt for it in items], max_length)
    choices = [choice_ids(tok, list(it.choices or [])) for it in items]
    return ChoiceBatch(enc["input_ids"], enc["attention_mask"], choices, [int(it.label or 0) for it in items])


def choice_scores(logits: torch.Tensor, batch: ChoiceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of the gold choice among the choices (B,), correct 0/1 (B,)) from last-position logits (B, V)."""
    lp, ok = [], []
    for b, (cid, y) in enumerate(zip(batch.choices, batch.labels)):
        z = torch.log_softmax(logits[b, cid].double(), -1)
        lp.append(float(z[y]))
        ok.append(float(int(z.argmax()) == y))
    return torch.tensor(lp, dtype=torch.float64), torch.tensor(ok)


def plain_logits(model, batch: ChoiceBatch) -> torch.Tensor:
    with torch.no_grad():
        return forward_logits(model, batch.ids, batch.mask, True)


@dataclass
class Hunt:
    """A HeadHunter search: selected ``heads`` in order, per-round scores and the objective trace."""

    heads: list[tuple[int, int]]
    u: float
    scale: float
    base_objective: float  # mean gold log-prob without guidance
    rounds: list[dict] = field(default_factory=list)  # {"round", "added", "objective", "scores": {site: obj}}
    prescreen: dict = field(default_factory=dict)  # {"scores": {"L3": obj}, "kept": [layers]}

    def to_dict(self) -> dict:
        return {
            "heads": [format_site(l, h) for l, h in self.heads],
            "u": self.u,
            "scale": self.scale,
            "base_objective": self.base_objective,
            "rounds": self.rounds,
            "prescreen": self.prescreen,
        }


def _objective(plain: torch.Tensor, pert: torch.Tensor, scale: float, batch: ChoiceBatch) -> float:
    return float(choice_scores(guide(plain, pert, scale), batch)[0].mean())


def _score_sets(model, batch, plain, sets, u, scale, max_rows, bar: Bar | None = None) -> list[float]:
    out = []
    per = max(1, max_rows // batch.ids.shape[0])
    for c0 in range(0, len(sets), per):
        chunk = sets[c0 : c0 + per]
        pert = perturbed_last_logits(model, batch.ids, batch.mask, chunk, u, max_rows)
        out += [_objective(plain, pert[j], scale, batch) for j in range(len(chunk))]
        if bar is not None:
            bar(len(chunk))
    return out


def _check_counts(**counts: int) -> None:
    for name, v in counts.items():
        lo = 0 if name in ("prescreen_layers", "n_random") else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")


def headhunt(
    model,
    tok,
    items: Sequence[Item],
    rounds: int = 2,
    per_round: int = 1,
    u: float = 1.0,
    scale: float = 1.0,
    pool: Any = "all",
    prescreen_layers: int = 0,
    max_rows: int = 64,
    progress: bool = True,
) -> Hunt:
    """Greedy head search (module docstring) on choice ``items``: ``rounds`` rounds adding ``per_round`` heads each.

    pool: the candidate heads (a site selector); prescreen_layers: if > 0, first keep only the heads of the
    best this-many layers of the pool (each layer scored with all its pool heads perturbed)."""
    u, scale = check_u(u), check_scale(scale)
    L, H, _ = model_shape(model)
    _check_counts(rounds=rounds, per_round=per_round, prescreen_layers=prescreen_layers)
    cand = head_list(pool, L, H)
    layers = sorted({l for l, _ in cand})
    if prescreen_layers > len(layers):
        raise ValueError(f"prescreen_layers={prescreen_layers}: the pool has {len(layers)} layers (valid: 0..{len(layers)})")
    batch = choice_batch(tok, items)
    plain = plain_logits(model, batch)
    base = float(choice_scores(plain, batch)[0].mean())
    hunt = Hunt([], u, scale, base)
    n_pool = len(cand) if not prescreen_layers else sum(1 for l, _ in cand if l in layers[:prescreen_layers])
    if rounds * per_round > n_pool:
        raise ValueError(f"rounds x per_round = {rounds * per_round} heads, but the candidate pool has {n_pool} heads")
    with progress_bar(quiet=not progress) as bar:
        if prescreen_layers:
            job = bar.task("headhunt: layers", total=len(layers))
            sets = [[p for p in cand if p[0] == l] for l in layers]
            sc = _score_sets(model, batch, plain, sets, u, scale, max_rows, job)
            order = sorted(range(len(layers)), key=lambda i: (-sc[i], layers[i]))
            kept = sorted(layers[i] for i in order[:prescreen_layers])
            hunt.prescreen = {"scores": {f"L{l}": sc[i] for i, l in enumerate(layers)}, "kept": kept}
            cand = [p for p in cand if p[0] in kept]
        for r in range(rounds):
            rest = [p for p in cand if p not in hunt.heads]
            job = bar.task(f"headhunt: round {r + 1}/{rounds}", total=len(rest))
            sc = _score_sets(model, batch, plain, [[*hunt.heads, p] for p in rest], u, scale, max_rows, job)
            order = sorted(range(len(rest)), key=lambda i: (-sc[i], rest[i]))
            added = [rest[i] for i in order[:per_round]]
            hunt.heads += added
            obj = sc[order[0]] if per_round == 1 else _score_sets(model, batch, plain, [hunt.heads], u, scale, max_rows)[0]
            hunt.rounds.append(
                {
                    "round": r + 1,
                    "added": [format_site(*p) for p in added],
                    "objective": obj,
                    "scores": {format_site(*p): sc[i] for i, p in enumerate(rest)},
                }
            )
    return hunt


def tune_strength(
    model, tok, items: Sequence[Item], heads: Any, u_grid: Sequence[float], s_grid: Sequence[float], max_rows: int = 64
) -> dict:
    """The (u, s) of the grid with the best mean gold log-prob on ``items`` for the head set ``heads``
    (one perturbed pass per u; every s reuses it). Ties: the earlier grid entry."""
    us = [check_u(x) for x in u_grid]
    ss = [check_scale(x) for x in s_grid]
    if not us or not ss:
        raise ValueError(f"u_grid {list(u_grid)} and s_grid {list(s_grid)} need at least one value each")
    batch = choice_batch(tok, items)
    plain = plain_logits(model, batch)
    table = []
    for u in us:
        pert = perturbed_last_logits(model, batch.ids, batch.mask, [heads], u, max_rows)[0]
        table += [{"u": u, "scale": s, "objective": _objective(plain, pert, s, batch)} for s in ss]
    best = max(table, key=lambda r: r["objective"])  # max keeps the first of equal values
    return {"u": best["u"], "scale": best["scale"], "objective": best["objective"], "table": table}


def evaluate_guidance(
    model, tok, items: Sequence[Item], sets: dict[str, tuple[Any, float, float]], batch_size: int = 16, progress: bool = True
) -> dict[str, dict[str, torch.Tensor]]:
    """{"plain" and each name of ``sets`` ({name: (heads, u, s)}): {"correct", "logp"} (N,)} on ``items``."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    L, H, _ = model_shape(model)
    for heads, u, s in sets.values():
        head_list(heads, L, H)
        check_u(u)
        check_scale(s)
    acc: dict[str, dict[str, list]] = {k: {"correct": [], "logp": []} for k in ["plain", *sets]}
    with progress_bar("guided evaluation", len(items), quiet=not progress) as bar:
        for i in range(0, len(items), batch_size):
            batch = choice_batch(tok, items[i : i + batch_size])
            plain = plain_logits(model, batch)
            lp, ok = choice_scores(plain, batch)
            acc["plain"]["logp"].append(lp)
            acc["plain"]["correct"].append(ok)
            for name, (heads, u, s) in sets.items():
                pert = perturbed_last_logits(model, batch.ids, batch.mask, [heads], u)[0]
                lp, ok = choice_scores(guide(plain, pert, s), batch)
                acc[name]["logp"].append(lp)
                acc[name]["correct"].append(ok)
            bar(len(batch.labels))
    return {k: {m: torch.cat(v) for m, v in d.items()} for k, d in acc.items()}


def nan_grid(scores: dict[str, float], n_layers: int, n_heads: int) -> torch.Tensor:
    """(L, H) tensor of per-site scores, NaN where a head was not a candidate."""
    from ..engine.sites import parse_site

    g = torch.full((n_layers, n_heads), math.nan)
    for k, v in scores.items():
        g[parse_site(k)] = v
    return g


def run_headhunt(
    task: Any = "sst2",
    tune_on: int = 16,
    eval_on: int = 150,
    seed: int = 0,
    rounds: int = 2,
    per_round: int = 1,
    u: float = 1.0,
    scale: float = 1.0,
    pool: Any = "all",
    prescreen_layers: int = 0,
    u_grid: Sequence[float] = (0.5, 1.0),
    s_grid: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    n_random: int = 2,
    batch_size: int = 16,
    max_rows: int = 64,
    save: str | Path | None = None,
    model_name: str = DEFAULT_MODEL,
    model_tok: tuple | None = None,
    progress: bool = True,
) -> dict:
    """Hunt heads on ``tune_on`` items of a choice task, tune (u, s) on the same items, and evaluate plain vs
    guided by the hunted heads vs guided by ``n_random`` sets of as many random heads (each with its own tuned
    (u, s)) on ``eval_on`` disjoint items. ``save``: JSON here, per-item records STEM.items.jsonl, plot STEM.png."""
    from ..data.tasks import load_task
    from ..data.tasks.base import Task
    from ..edits.select import random_sites
    from .bootstrap import accuracy_ci, paired_test

    _check_counts(rounds=rounds, per_round=per_round, prescreen_layers=prescreen_layers, n_random=n_random, batch_size=batch_size)
    if not u_grid or not s_grid:
        raise ValueError(f"u_grid {list(u_grid)} and s_grid {list(s_grid)} need at least one value each")
    for x in (u, *u_grid):
        check_u(x)
    for x in (scale, *s_grid):
        check_scale(x)
    if tune_on < 1:
        raise ValueError(f"HeadHunter searches on the tuning split: tune_on must be >= 1, got {tune_on}")
    t0 = time.time()
    if model_tok is None:
        from ..models import load

        model_tok = load(model_name)
    model, tok = model_tok
    the_task = task if isinstance(task, Task) else load_task(task, tok)
    if the_task.kind != "choice":
        raise ValueError(f"HeadHunter scores choice tasks; {the_task.name!r} is a generation task")
    tune, ev = the_task.split(tune_on, eval_on, seed)
    L, H, _ = model_shape(model)
    hunt = headhunt(model, tok, tune, rounds, per_round, u, scale, pool, prescreen_layers, max_rows, progress)
    sets: dict[str, tuple[Any, float, float]] = {}
    strength = {}
    named = {"hunted": hunt.heads}
    for r in range(n_random):
        rs = random_sites(len(hunt.heads), L, H, seed=r)
        named[f"random{r}"] = [(l, h) for l, hs in rs.items() for h in hs]
    for name, heads in named.items():
        st = tune_strength(model, tok, tune, heads, u_grid, s_grid, max_rows)
        strength[name] = {"heads": [format_site(*p) for p in heads], **st}
        sets[name] = (heads, st["u"], st["scale"])
    res = evaluate_guidance(model, tok, ev, sets, batch_size, progress)
    stats: dict[str, dict] = {k: accuracy_ci(v["correct"]) for k, v in res.items()}
    for name in sets:
        stats[f"{name}_vs_plain"] = paired_test(res[name]["correct"], res["plain"]["correct"], seed=seed)
        stats[f"{name}_logp_vs_plain"] = paired_test(res[name]["logp"], res["plain"]["logp"], seed=seed)
        if name != "hunted":
            stats[f"hunted_vs_{name}"] = paired_test(res["hunted"]["correct"], res[name]["correct"], seed=seed)
    out = {
        "method": "headhunt",
        "task": the_task.name,
        "model": model_name,
        "seed": seed,
        "tune_on": len(tune),
        "eval_on": len(ev),
        "rounds": rounds,
        "per_round": per_round,
        "u": u,
        "scale": scale,
        "pool": pool if isinstance(pool, str) else [format_site(*p) for p in head_list(pool, L, H)],
        "prescreen_layers": prescreen_layers,
        "u_grid": [float(x) for x in u_grid],
        "s_grid": [float(x) for x in s_grid],
        "n_random": n_random,
        "search": hunt.to_dict(),
        "strength": strength,
        "results": {"stats": stats, "mean_logp": {k: float(v["logp"].mean()) for k, v in res.items()}},
        "seconds": round(time.time() - t0, 1),
    }
    if save:
        from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text

        save = Path(save)
        recs = [
            {"i": i, **{f"{k}_{m}": float(v[m][i]) for k, v in res.items() for m in ("correct", "logp")}} for i in range(len(ev))
        ]
        atomic_write_text(save.with_suffix(".items.jsonl"), "".join(json.dumps(r) + "\n" for r in recs))
        atomic_write_bytes(save.with_suffix(".png"), hunt_png(out, L, H))
        out["plot"] = str(save.with_suffix(".png"))
        atomic_write_json(save, out)
    return out


def hunt_png(out: dict, n_layers: int, n_heads: int) -> bytes:
    """Round-1 objective gain per candidate head (grid) and accuracy with 95% intervals per condition."""
    import matplotlib

    from ..io import png_bytes

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    search = out["search"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    if search["rounds"]:
        g = nan_grid(search["rounds"][0]["scores"], n_layers, n_heads) - search["base_objective"]
        lim = float(g.nan_to_num(0).abs().max()) or 1.0
        im = axes[0].imshow(g.T.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
        fig.colorbar(im, ax=axes[0], label="gold log-prob gain (round 1)")
        axes[0].set_xlabel("layer")
        axes[0].set_ylabel("head")
        axes[0].set_title(f"candidates of round 1 ({out['task']}, {out['tune_on']} tuning items)")
    st = out["results"]["stats"]
    names = [k for k in st if "_vs_" not in k]
    vals = [st[k]["value"] for k in names]
    err = [[st[k]["value"] - st[k]["ci"][0] for k in names], [st[k]["ci"][1] - st[k]["value"] for k in names]]
    axes[1].bar(names, vals, yerr=err, capsize=4, color=["0.6"] + ["C1"] + ["C0"] * (len(names) - 2))
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("accuracy (95% Wilson)")
    axes[1].set_title(f"held-out: {out['eval_on']} items; hunted {', '.join(search['heads'])}")
    return png_bytes(fig)


__all__ = [
    "ChoiceBatch",
    "Hunt",
    "choice_batch",
    "choice_scores",
    "evaluate_guidance",
    "headhunt",
    "hunt_png",
    "nan_grid",
    "run_headhunt",
    "tune_strength",
]
