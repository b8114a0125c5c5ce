"""Tuning of edit parameters on a tuning split only (the evaluation split is never seen here).

* :func:`tune_zerotuning` — ZeroTuning's head-behaviour profiling + γ sweep (Han et al. 2025, arXiv 2505.11739), at the
  granularity of layer blocks (``block`` layers at a time; ``block=1`` = per layer) to fit a CPU.
* :func:`search_act` — ACT's offline head search (Yu et al., ICML 2024, arXiv 2406.15765): calibrate one layer block at a time,
  keep those that improve the tuning score, then check the union.
* :func:`fit_inject` — SITE's soft head selection (Park & Rhee 2025): learn θ (α = sigmoid θ) by
  cross-entropy on the gold first token, with the task embeddings fixed.
* :func:`tune_grid` — generic: pick the best of a list of candidate edit lists.

Scores are accuracy plus 1e-3 × the mean log-prob margin of the gold choice (a tie-breaker).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..data.tasks.base import Item, Task
from ..edits import act as make_act
from ..edits import zerotuning as make_zt
from .evaluate import Result, choice_ids, evaluate


def score_of(r: Result) -> float:
    return r.accuracy + 1e-3 * float(r.margin.clamp(-10, 10).mean())


def _blocks(layers: Sequence[int], block: int) -> list[list[int]]:
    if block < 1:
        raise ValueError(f"block={block} must be >= 1")
    layers = list(layers)
    return [layers[i : i + block] for i in range(0, len(layers), block)]


def tune_grid(
    model: Any,
    tokenizer: Any,
    task: Task,
    items: Sequence[Item],
    candidates: list[tuple[str, list]],
    batch_size: int = 8,
    log: list | None = None,
    base: Result | None = None,
    progress: bool = True,
) -> tuple[list, dict]:
    """Best candidate (name, edits) by tuning score; the empty edit list (baseline) always competes."""
    log = [] if log is None else log
    base = base or evaluate(model, tokenizer, task, items, (), batch_size, desc="tune: baseline", progress=progress)
    best = ("baseline", [], score_of(base))
    log.append({"candidate": "baseline", "accuracy": base.accuracy, "score": score_of(base)})
    for name, eds in candidates:
        r = evaluate(model, tokenizer, task, items, eds, batch_size, desc=f"tune: {name}", progress=progress)
        log.append({"candidate": name, "accuracy": r.accuracy, "score": score_of(r)})
        if score_of(r) > best[2]:
            best = (name, eds, score_of(r))
    return best[1], {"chosen": best[0], "trials": log}


def tune_zerotuning(
    model: Any,
    tokenizer: Any,
    task: Task,
    items: Sequence[Item],
    layers: Sequence[int] | None = None,
    block: int = 5,
    probe: tuple[float, float] = (1.5, 0.67),
    grid: dict[str, Sequence[float]] | None = None,
    batch_size: int = 8,
    per_head: bool = False,
    progress: bool = True,
) -> tuple[list, dict]:
    """Profile layer blocks with γ > 1 and γ < 1, keep the dominant direction's helpful blocks, sweep γ.

    ``per_head=True`` adds the paper's head-specific step inside the kept layers: each head is
    profiled alone in the chosen direction and only the heads that help are rescaled.
    """
    L = model.config.num_hidden_layers
    layers = list(range(L)) if layers is None else list(layers)
    grid = grid or {"up": (1.25, 1.5, 2.0, 3.0), "down": (0.8, 0.67, 0.5, 0.33)}
    base = evaluate(model, tokenizer, task, items, (), batch_size, desc="zerotuning: baseline", progress=progress)
    b0 = score_of(base)
    trials: list[dict] = [{"candidate": "baseline", "accuracy": base.accuracy, "score": b0}]
    gain = {"up": [], "down": []}
    for blk in _blocks(layers, block):
        for way, g in zip(("up", "down"), probe):
            r = evaluate(
                model,
                tokenizer,
                task,
                items,
                [make_zt(g, sites={l: "all" for l in blk})],
                batch_size,
                desc=f"zerotuning: profile L{blk[0]}-{blk[-1]} gamma={g}",
                progress=progress,
            )
            d = score_of(r) - b0
            gain[way].append((blk, d))
            trials.append({"candidate": f"profile L{blk[0]}-{blk[-1]} gamma={g}", "accuracy": r.accuracy, "delta": d})
    way = max(("up", "down"), key=lambda w: sum(max(d, 0.0) for _, d in gain[w]))
    chosen = [l for blk, d in gain[way] if d > 0 for l in blk]
    info = {"direction": way, "layers": chosen, "trials": trials}
    if not chosen:
        info["chosen"] = "baseline (no layer block improved the tuning score)"
        return [], info
    sites: Any = {l: "all" for l in chosen}
    if per_head:
        g = probe[0] if way == "up" else probe[1]
        H = model.config.num_attention_heads
        keep = []
        for l in chosen:
            for h in range(H):
                r = evaluate(
                    model,
                    tokenizer,
                    task,
                    items,
                    [make_zt(g, sites=[(l, h)])],
                    batch_size,
                    desc=f"zerotuning: profile L{l}H{h}",
                    progress=progress,
                )
                trials.append({"candidate": f"profile L{l}H{h} gamma={g}", "accuracy": r.accuracy, "delta": score_of(r) - b0})
                if score_of(r) > b0:
                    keep.append((l, h))
        info["heads"] = keep
        if not keep:
            info["chosen"] = "baseline (no single head improved the tuning score)"
            return [], info
        sites = keep
    best, best_s = None, b0
    for g in grid[way]:
        e = make_zt(g, sites=sites)
        r = evaluate(model, tokenizer, task, items, [e], batch_size, desc=f"zerotuning: gamma={g}", progress=progress)
        trials.append(
            {
                "candidate": f"gamma={g} on {e.describe().split(' on ')[1].split(':')[0]}",
                "accuracy": r.accuracy,
                "score": score_of(r),
            }
        )
        if score_of(r) > best_s:
            best, best_s = e, score_of(r)
    info["chosen"] = best.describe() if best else "baseline (no gamma beat it on the tuning split)"
    return ([best] if best else []), info


def search_act(
    model: Any,
    tokenizer: Any,
    task: Task,
    items: Sequence[Item],
    layers: Sequence[int] | None = None,
    block: int = 1,
    beta: float = 0.4,
    thr: float = 0.1,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[list, dict]:
    """ACT head search by layer block: keep blocks whose calibration improves the tuning score."""
    L = model.config.num_hidden_layers
    layers = list(range(2, max(L - 1, 3))) if layers is None else list(layers)
    base = evaluate(model, tokenizer, task, items, (), batch_size, desc="act: baseline", progress=progress)
    b0 = score_of(base)
    trials: list[dict] = [{"candidate": "baseline", "accuracy": base.accuracy, "score": b0}]
    good = []
    for blk in _blocks(layers, block):
        r = evaluate(
            model,
            tokenizer,
            task,
            items,
            [make_act({l: "all" for l in blk}, beta, thr)],
            batch_size,
            desc=f"act: L{blk[0]}-{blk[-1]}",
            progress=progress,
        )
        d = score_of(r) - b0
        trials.append({"candidate": f"L{blk[0]}-{blk[-1]}", "accuracy": r.accuracy, "delta": d})
        if d > 0:
            good.append((d, blk))
    good.sort(reverse=True)
    info = {"trials": trials}
    if not good:
        info["chosen"] = "baseline (no block improved the tuning score)"
        return [], info
    cands = [("best block", [l for l in good[0][1]])]
    if len(good) > 1:
        cands.append(("all improving blocks", [l for _, blk in good for l in blk]))
    best, best_s = make_act({l: "all" for l in good[0][1]}, beta, thr), b0 + good[0][0]
    if len(cands) > 1:
        e = make_act({l: "all" for l in cands[1][1]}, beta, thr)
        r = evaluate(model, tokenizer, task, items, [e], batch_size, desc="act: union", progress=progress)
        trials.append({"candidate": "union", "accuracy": r.accuracy, "score": score_of(r)})
        if score_of(r) > best_s:
            best, best_s = e, score_of(r)
    info["chosen"] = best.describe()
    return [best], info


def few_shot_prompt(demos: Sequence[Item], item: Item, sep: str = "\n\n") -> str:
    """k-shot prompt for a choice item: each demo is its prompt + gold choice."""
    return "".join(d.prompt + d.choices[d.label] + sep for d in demos) + item.prompt


def fit_inject(
    model: Any,
    tokenizer: Any,
    items: Sequence[Item],
    means: dict,
    steps: int = 60,
    lr: float = 0.1,
    batch_size: int = 4,
    theta0: float = -2.0,
    seed: int = 0,
    callback: Callable[[int, float], None] | None = None,
):
    """Learn SITE's per-head θ on zero-shot ``items`` (choice items) with the task embeddings fixed."""
    from ..edits import inject
    from ..engine.hf import attach
    from ..measure.record import encode_left

    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    edit = inject(means, theta0)
    opt = torch.optim.Adam([edit.theta], lr=lr)
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    losses = []
    try:
        with attach(model, edits=[edit]) as run:
            for step in range(steps):
                idx = torch.randint(0, len(items), (min(batch_size, len(items)),), generator=g).tolist()
                batch = [items[i] for i in idx]
                enc = encode_left(tokenizer, [it.prompt for it in batch])
                run.state["prompt_last"] = enc["attention_mask"].sum(1) - 1
                logits = model(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False, logits_to_keep=1
                ).logits[:, -1]
                gold = torch.tensor([choice_ids(tokenizer, it.choices)[it.label] for it in batch])
                loss = torch.nn.functional.cross_entropy(logits.float(), gold)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                if callback:
                    callback(step, float(loss.detach()))
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
    edit.theta.requires_grad_(False)
    return edit, {"losses": losses}
