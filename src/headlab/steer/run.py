"""``headlab steer``: tune an edit on a tuning split, evaluate baseline vs steered on a disjoint
evaluation split (accuracies with 95 % Wilson intervals, the paired difference with a paired bootstrap
interval and McNemar's exact test, item counts beside every number), save the tuned edits as JSON with
per-item records (``STEM.items.jsonl``), or apply a saved configuration to another task / split.

Methods (``METHODS``): zerotuning, act, redistribute, reinforce, emphasize, inject, ablate.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from ..data.tasks import load_task
from ..data.tasks.base import Task
from ..edits import ablate, dual_stream, from_config, redistribute, reinforce, to_config
from ..measure.record import context_sensitivity, task_embedding
from ..models import DEFAULT_MODEL
from ..report.figure import new_figure
from .bootstrap import accuracy_ci, paired_test
from .evaluate import evaluate
from .result import SteerResult, draw_accuracy
from .tune import few_shot_prompt, fit_inject, search_act, tune_grid, tune_zerotuning

#: baseline results of this process, keyed by (model id, task, evaluation prompts): several methods
#: evaluated on the same split in one session share one baseline pass
_BASELINES: dict = {}

METHODS = ("zerotuning", "act", "redistribute", "reinforce", "emphasize", "inject", "ablate")


def tune_method(method: str, model: Any, tok: Any, task: Task, tune: list, opts: dict) -> tuple[list, dict]:
    """Edits for ``method`` tuned on ``tune`` only."""
    bs = opts.get("batch_size", 8)
    L = model.config.num_hidden_layers
    if method == "zerotuning":
        return tune_zerotuning(
            model,
            tok,
            task,
            tune,
            block=opts.get("block", 5),
            batch_size=bs,
            per_head=opts.get("per_head", False),
            progress=opts.get("progress", True),
        )
    if method == "act":
        return search_act(
            model,
            tok,
            task,
            tune,
            block=opts.get("block", 3),
            beta=opts.get("beta", 0.4),
            thr=opts.get("thr", 0.1),
            batch_size=bs,
            progress=opts.get("progress", True),
        )
    if method == "ablate":
        sites = opts.get("sites")
        if not sites:
            raise ValueError("ablate needs --sites (e.g. 'retrieval:top20' with --atlas, or 'random:20:0')")
        e = ablate(sites, mode=opts.get("mode", "uniform"), atlas=opts.get("atlas"))
        e.bind(L, model.config.num_attention_heads)
        return [e], {"chosen": e.describe(), "note": "no tuning: sites given"}
    if method == "redistribute":
        if not any("context" in it.spans for it in tune):
            raise ValueError(f"redistribute needs items with a 'context' span; task {task.name!r} has none")
        grid = (opts["param"],) if opts.get("param") is not None else opts.get("grid", (0.6, 0.3))
        cands = [(f"p={p}", [redistribute("context", p=p, min_share=opts.get("min_share", 0.2))]) for p in grid]
        if opts.get("param") is not None:
            return cands[0][1], {"chosen": cands[0][0], "note": "forced by --param: no tuning competition"}
        return tune_grid(model, tok, task, tune, cands, bs, progress=opts.get("progress", True))
    if method == "reinforce":
        if not any("context" in it.spans for it in tune):
            raise ValueError(f"reinforce needs items with a 'context' span; task {task.name!r} has none")
        from ..data.tasks.squad import no_context

        score = context_sensitivity(model, tok, [it.prompt for it in tune], [no_context(it) for it in tune], bs)
        grid = (opts["param"],) if opts.get("param") is not None else opts.get("grid", (1.5, 2.0))
        cands = [(f"alpha={a}", [reinforce(score, alpha=a)]) for a in grid]
        if opts.get("param") is not None:
            eds, info = cands[0][1], {"chosen": cands[0][0], "note": "forced by --param: no tuning competition"}
            eds[0].bind(L, model.config.num_attention_heads)
            info["sites"] = sorted([int(l), int(h)] for l, hs in eds[0].sites.items() for h in hs)
        else:
            eds, info = tune_grid(model, tok, task, tune, cands, bs, progress=opts.get("progress", True))
        info["vhd_top"] = [
            [int(i // score.shape[1]), int(i % score.shape[1])] for i in score.flatten().argsort(descending=True)[:10]
        ]
        return eds, info
    if method == "emphasize":
        return tune_emphasize(model, tok, task, tune, opts)
    if method == "inject":
        if task.kind != "choice":
            raise ValueError("inject is implemented for choice tasks (cross-entropy on the gold label token)")
        k = opts.get("shots", 4)
        n_emb = opts.get("n_embed", 12)
        half = max(k + 1, len(tune) // 2)
        pool, train = tune[:half], tune[half:] or tune
        g = torch.Generator().manual_seed(opts.get("seed", 0))
        icl = []
        for _ in range(n_emb):
            idx = torch.randperm(len(pool), generator=g)[: k + 1].tolist()
            icl.append(few_shot_prompt([pool[j] for j in idx[:k]], pool[idx[k]]))
        means = task_embedding(model, tok, icl, "all", batch_size=bs)
        edit, info = fit_inject(
            model, tok, train, means, steps=opts.get("steps", 20), lr=opts.get("lr", 0.1), batch_size=opts.get("inject_batch", 4)
        )
        info["chosen"] = edit.describe()
        info["losses"] = [round(x, 4) for x in info["losses"]]
        return [edit], info
    raise ValueError(f"unknown steering method {method!r}; valid: {METHODS}")


def tune_emphasize(model: Any, tok: Any, task: Task, tune: list, opts: dict) -> tuple[list, dict]:
    """Dual-stream emphasis of the context (arXiv 2501.12206, text version; :func:`headlab.edits.dual_stream`): α in
    the grid (default 0.35, 0.7), each on every head of layers 2..L-1 alike and with the head-specific
    α_h = α s_h / max s (s: the VHD context sensitivity measured on the tuning items), tuned against the baseline."""
    if not any("context" in it.spans for it in tune):
        raise ValueError(f"emphasize needs items with a 'context' span; task {task.name!r} has none")
    from ..data.tasks.squad import no_context

    bs = opts.get("batch_size", 8)
    if opts.get("param") is not None:
        eds = [dual_stream("context", alpha=opts["param"])]
        return eds, {"chosen": f"alpha={opts['param']}", "note": "forced by --param: no tuning competition"}
    score = context_sensitivity(model, tok, [it.prompt for it in tune], [no_context(it) for it in tune], bs)
    L, H = score.shape
    first = min(2, L - 1)  # the emphasised layers (dual_stream's default sites): the weights are normalised over them
    weights = {(l, h): float(score[l, h]) for l in range(first, L) for h in range(H) if score[l, h] > 0}
    cands = []
    for a in opts.get("grid", (0.35, 0.7)):
        cands.append((f"alpha={a}", [dual_stream("context", alpha=a)]))
        if weights:  # no head moved with the context: no head-specific variant
            cands.append((f"alpha={a}, VHD head weights", [dual_stream("context", alpha=a, head_weights=weights)]))
    eds, info = tune_grid(model, tok, task, tune, cands, bs, progress=opts.get("progress", True))
    info["vhd_top"] = [[int(i // score.shape[1]), int(i % score.shape[1])] for i in score.flatten().argsort(descending=True)[:10]]
    return eds, info


def report(base, steered, n_boot: int = 2000, seed: int = 0) -> dict:
    """[value, low, high] triples for the table and plot, plus ``stats`` with the item counts and McNemar."""
    b, s = accuracy_ci(base.correct), accuracy_ci(steered.correct)
    d = paired_test(steered.correct, base.correct, n_boot=n_boot, seed=seed)
    r = lambda t: [round(t["value"], 4), *(round(x, 4) for x in t["ci"])]  # noqa: E731
    return {
        "baseline": r(b),
        "steered": r(s),
        "difference": r(d),
        "n": int(base.correct.numel()),
        "stats": {"baseline": b, "steered": s, "difference": d},
    }


def few_shot_items(tune: list, ev: list, shots: int, seed: int = 0) -> list:
    """Each evaluation item with ``shots`` random demonstrations from the tuning split before it."""
    if shots < 1 or shots > len(tune):
        raise ValueError(f"--icl-shots={shots} must be in [1, {len(tune)}] (tuning items available)")
    g = torch.Generator().manual_seed(seed + 1)
    out = []
    for it in ev:
        demos = [tune[j] for j in torch.randperm(len(tune), generator=g)[:shots].tolist()]
        out.append(dataclasses.replace(it, prompt=few_shot_prompt(demos, it), spans={}))
    return out


def plot(res: dict, path: Path, title: str) -> None:
    """Write the accuracy bars (baseline, steered, ICL; 95 % Wilson intervals) as a PNG (no pyplot)."""
    fig = new_figure(4, 3.2)
    draw_accuracy(fig.add_subplot(), res).set_title(title, fontsize=9)
    fig.save(path)


def steer(
    method: str | None,
    task_name: str | Task,
    *,
    config: str | None = None,
    tune_on: int = 40,
    eval_on: int = 100,
    seed: int = 0,
    save: str | None = None,
    model_name: str = DEFAULT_MODEL,
    plot_path: str | None = None,
    task_kw: dict | None = None,
    progress: bool = True,
    model_tok: tuple | None = None,
    **opts,
) -> SteerResult:
    """Tune ``method`` (or load ``config``) and evaluate baseline vs steered on ``task_name``.

    Returns a :class:`~headlab.steer.result.SteerResult`: the summary dict that ``save`` writes, with the
    per-item records (``.records``), ``.to_frame()`` (one row per item) and ``.plot()`` (accuracies with
    Wilson intervals, the paired difference). Methods and their papers: see :mod:`headlab.steer.result`."""
    from ..io import atomic_write_json

    if (method is None) == (config is None):
        raise ValueError("give exactly one of a METHOD to tune or --config FILE to apply")
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown steering method {method!r}; valid: {METHODS}")
    if method not in (None, "ablate") and tune_on < 1:
        raise ValueError(f"{method} is tuned on the tuning split: --tune-on must be >= 1, got {tune_on}")
    t0 = time.time()
    if model_tok is None:
        from ..models import load

        model_tok = load(model_name)
    model, tok = model_tok
    task = task_name if isinstance(task_name, Task) else load_task(task_name, tok, **(task_kw or {}))
    task_name = task.name
    tune, ev = task.split(tune_on, eval_on, seed)  # with --config the tuning items are just skipped
    if method:
        edits, info = tune_method(method, model, tok, task, tune, {"seed": seed, "progress": progress, **opts})
    else:
        edits, info = from_config(config), {"chosen": f"loaded from {config}"}
    bs = opts.get("batch_size", 8)
    key = (id(model), task.name, tuple(it.prompt for it in ev))
    base = _BASELINES.get(key) or evaluate(model, tok, task, ev, (), bs, desc="eval: baseline", progress=progress)
    _BASELINES[key] = base
    st = evaluate(model, tok, task, ev, edits, bs, desc="eval: steered", progress=progress) if edits else base
    res = report(base, st, seed=seed)
    shots = opts.get("icl_shots", 0)
    icl = None
    if shots:
        if task.kind != "choice":
            raise ValueError(f"--icl-shots needs a choice task; {task.name!r} generates")
        icl = evaluate(
            model, tok, task, few_shot_items(tune, ev, shots, seed), (), bs, desc=f"eval: {shots}-shot ICL", progress=progress
        )
        ic = accuracy_ci(icl.correct)
        res["icl"] = [round(ic["value"], 4), *(round(x, 4) for x in ic["ci"])]
        res["stats"]["icl"] = ic
        res["stats"]["steered_vs_icl"] = paired_test(st.correct, icl.correct, seed=seed)
    out = {
        "method": method or "config",
        "task": task_name,
        "model": model_name,
        "seed": seed,
        "tune_on": len(tune),
        "eval_on": len(ev),
        "edits": to_config(edits),
        "describe": [e.describe() for e in edits],
        "tuning": info,
        "results": res,
        "seconds": round(time.time() - t0, 1),
    }
    records = [
        {
            "i": i,
            "baseline": float(base.correct[i]),
            "steered": float(st.correct[i]),
            **({"icl": float(icl.correct[i])} if icl is not None else {}),
            "baseline_output": base.outputs[i],
            "steered_output": st.outputs[i],
        }
        for i in range(len(ev))
    ]
    if save:
        from ..io import atomic_write_text

        atomic_write_text(Path(save).with_suffix(".items.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
        atomic_write_json(save, out)
    if plot_path or save:
        pp = Path(plot_path) if plot_path else Path(save).with_suffix(".png")
        plot(res, pp, f"{out['method']} on {task_name} (n={len(ev)})")
        out["plot"] = str(pp)
    return SteerResult(out, records=records)
