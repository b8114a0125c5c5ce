"""Attention vs attribution: does a decoder's attention at the final position point at the input tokens
that feature attribution finds salient for its prediction?

The measurement of Papi et al., "Cross-Attention is Half Explanation in Speech-to-Text Models"
(arXiv 2509.18010), applied to the self-attention of a text decoder. For one prompt and the log-prob
y = log p(target) of the predicted (SST-2) or gold-answer (SQuAD) token at the final position:

* saliency (per input token, non-negative): ``gxi`` gradient × input and ``ig`` integrated gradients on
  the input embeddings (baseline: the pad / end-of-sequence token's embedding at every position), L2 norm
  over the hidden dimension (Captum, :mod:`.saliency`); ``attn_grad``
  the positive part of attention × gradient at the final query, averaged over layers and heads
  (:mod:`.attn_grad`);
* attention at the final query: per head A[l, h, T-1, :], per layer (head mean), aggregated over all
  heads and layers (``mean``, the paper's averaged attention) and attention rollout (``rollout``,
  arXiv 2005.00928, :mod:`.rollout`);
* agreement (:mod:`.agreement`): Spearman ρ, Pearson r, top-20 % coverage and saliency-mass share.

Per item every view is compared with every saliency; over items each number is a mean with a paired
percentile bootstrap interval (:func:`headlab.stats.paired_difference` against 0).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..stats import paired_difference
from .agreement import METRICS, agreement
from .attn_grad import attention_grad, attn_grad_saliency
from .rollout import rollout_last
from .saliency import token_saliency

TASKS = ("sst2", "squad")
SALIENCIES = ("gxi", "ig", "attn_grad")
VIEWS = ("mean", "rollout")
PAIRS = (("gxi", "ig"), ("attn_grad", "ig"), ("attn_grad", "gxi"))


@dataclass
class Prompt:
    ids: torch.Tensor  # (1, T)
    target: int | Callable[[torch.Tensor], int]  # token id, or chosen from the final logits (V,)
    meta: dict


def _label_argmax(choice_ids: list[int]) -> Callable[[torch.Tensor], int]:
    def pick(logits: torch.Tensor) -> int:
        return choice_ids[int(torch.argmax(logits[choice_ids]))]

    return pick


def item_indices(n_total: int, items: int, offset: int = 0, seed: int | None = None) -> list[int]:
    """Indices (in the task's stored order) of the prompts :func:`prompts` takes: positions ``offset`` to
    ``offset + items - 1`` of the stored order, or with ``seed`` of the order ``headlab steer --seed SEED``
    shuffles the task into (:meth:`headlab.data.tasks.Task.split`; ``offset`` = its ``--tune-on``)."""
    import random

    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset={offset!r} must be >= 0")
    if offset + items > n_total:
        raise ValueError(f"offset {offset} + items {items} exceeds the {n_total} prompts of the task")
    order = list(range(n_total))
    if seed is not None:
        random.Random(seed).shuffle(order)  # the shuffle of Task.split
    return order[offset : offset + items]


def prompts(tokenizer, task: str, items: int, max_chars: int = 600, offset: int = 0, seed: int | None = None) -> list[Prompt]:
    """``items`` prompts of ``task`` (the first ones; ``offset`` / ``seed``: see :func:`item_indices`): SST-2
    validation (target: the predicted label word, " negative" / " positive") or answerable SQuAD v2 with passages
    of <= ``max_chars`` characters in the tokenizer's chat template (target: the first token of the first gold
    answer). ``meta["item"]`` is the prompt's index in the task's stored order."""
    from ..data.tasks import load_task

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    if not isinstance(items, int) or items <= 0:
        raise ValueError(f"items={items!r} must be a positive number of prompts")
    plain = offset == 0 and seed is None  # the first ITEMS prompts, as before these options
    if task == "sst2":
        t = load_task("sst2", n=items if plain else None)
        choices = t.items[0].choices or []
        choice_ids = [tokenizer(c, add_special_tokens=False).input_ids[0] for c in choices]
        if len(set(choice_ids)) != len(choices):
            raise ValueError(f"label words {choices} share their first token; cannot tell the prediction apart")
        out = []
        for i in item_indices(len(t.items), min(items, len(t.items)), offset, seed):
            it = t.items[i]
            meta = {"item": i, "label": choices[it.label] if it.label is not None else None, "idx": it.meta.get("idx")}
            out.append(Prompt(tokenizer(it.prompt, return_tensors="pt").input_ids, _label_argmax(choice_ids), meta))
    else:
        if max_chars < 50:
            raise ValueError(f"max_chars={max_chars} must be >= 50 (passage length in characters)")
        t = load_task("squad", tokenizer=tokenizer, max_chars=max_chars)
        out = []
        take = list(range(min(items, len(t.items)))) if plain else item_indices(len(t.items), items, offset, seed)
        for i in take:
            it = t.items[i]
            answer = (it.answers or [""])[0]
            text = answer if it.prompt[-1:].isspace() else " " + answer
            tid = tokenizer(text, add_special_tokens=False).input_ids[0]
            meta = {"item": i, "answer": answer, "id": it.meta.get("id")}
            out.append(Prompt(tokenizer(it.prompt, return_tensors="pt").input_ids, tid, meta))
    if len(out) < items:
        raise ValueError(f"task {task!r} has {len(out)} prompts (max_chars={max_chars}); asked for items={items}")
    return out


def _round(x: float, nd: int = 5) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def _agree_json(a: dict) -> dict:
    return {m: _round(a[m]) for m in METRICS}


def baseline_token(tokenizer) -> int | None:
    """The IG baseline token: the tokenizer's pad token, else its end-of-sequence token, else None (zero)."""
    if tokenizer is None:
        return None
    for tid in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(tid, int):
            return tid
    return None


def attribute(
    model, prompt: Prompt, ig_steps: int = 8, frac: float = 0.2, tokenizer=None, baseline_id: int | None = None
) -> dict:
    """One item's record: target, saliency checks, agreement of every attention view with every saliency.

    ``baseline_id``: the IG baseline token (its embedding at every position; None: the zero embedding)."""
    t0 = time.time()
    ids = prompt.ids
    ag = attention_grad(model, ids, prompt.target)
    tid = ag.target_id
    gxi = token_saliency(model, ids, tid, "gxi")
    ig = token_saliency(model, ids, tid, "ig", n_steps=ig_steps, baseline_id=baseline_id)
    sal = {"gxi": gxi.scores, "ig": ig.scores, "attn_grad": attn_grad_saliency(ag)}
    views = {"mean": ag.last.mean((0, 1)), "rollout": rollout_last(ag.maps)}
    L, H, T = ag.last.shape
    rec: dict[str, Any] = dict(prompt.meta)
    top1 = int(torch.argmax(ag.logits))
    rec.update(
        {
            "tokens": T,
            "target_id": tid,
            "target_logprob": _round(ag.target),
            "target_is_top1": top1 == tid,
            "ig_span": _round(ig.span),
            "ig_delta": _round(ig.delta, 6),
            "ig_delta_rel": _round(abs(ig.delta) / max(abs(ig.span), 1e-9), 6),
        }
    )
    if tokenizer is not None:
        rec["target"] = tokenizer.decode([tid])
        toks = [tokenizer.decode([int(t)]) for t in ids[0]]
        k = max(1, round(frac * T))
        rec["top_tokens"] = {
            name: [toks[j] for j in torch.argsort(-v.double(), stable=True)[:k].tolist()]
            for name, v in (("ig", sal["ig"]), ("mean", views["mean"]), ("rollout", views["rollout"]))
        }
    agg = {v: {s: agreement(views[v], sal[s], frac) for s in SALIENCIES} for v in VIEWS}
    rec["k"] = agg["mean"]["ig"]["k"]
    rec["chance_coverage"] = _round(agg["mean"]["ig"]["chance"])
    rec["aggregated"] = {v: {s: _agree_json(agg[v][s]) for s in SALIENCIES} for v in VIEWS}
    rec["saliency_pairs"] = {f"{a}~{b}": _agree_json(agreement(sal[a], sal[b], frac)) for a, b in PAIRS}
    per_layer, per_head = {}, {}
    for s in SALIENCIES:
        lay = [agreement(ag.last[layer].mean(0), sal[s], frac) for layer in range(L)]
        head = [[agreement(ag.last[layer, h], sal[s], frac) for h in range(H)] for layer in range(L)]
        per_layer[s] = {m: [_round(a[m], 4) for a in lay] for m in ("spearman", "coverage")}
        per_head[s] = {m: [[_round(a[m], 4) for a in row] for row in head] for m in ("spearman", "coverage")}
    rec["per_layer"], rec["per_head"] = per_layer, per_head
    rec["seconds"] = round(time.time() - t0, 2)
    return rec


def mean_ci(values, seed: int = 0) -> dict:
    """{"value", "ci", "n"} mean of the finite values with a percentile bootstrap interval (n = finite count)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return {"value": None, "ci": None, "n": 0}
    d = paired_difference(x, np.zeros_like(x), seed=seed)  # mean of x − 0: the bootstrap of a mean
    ci = [_round(c) for c in d["ci"]] if all(math.isfinite(c) for c in d["ci"]) else None
    return {"value": _round(d["value"]), "ci": ci, "n": d["n"]}


def _nanmean(rows: list) -> np.ndarray:
    """Mean over items (axis 0) of equally shaped nested lists, None/NaN left out."""
    a = np.array(rows, dtype=np.float64)  # None -> nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN cell stays NaN
        return np.nanmean(a, axis=0)


def _listed(a: np.ndarray, nd: int = 4) -> list:
    return [_listed(x, nd) for x in a] if a.ndim > 1 else [_round(v, nd) for v in a.tolist()]


def summarize(records: list[dict]) -> dict:
    """Means with bootstrap intervals over items (see the module docstring)."""
    if not records:
        raise ValueError("summarize: no items")
    out: dict[str, Any] = {"items": len(records)}
    out["aggregated"] = {
        v: {s: {m: mean_ci([r["aggregated"][v][s][m] for r in records]) for m in METRICS} for s in SALIENCIES} for v in VIEWS
    }
    out["saliency_pairs"] = {
        p: {m: mean_ci([r["saliency_pairs"][p][m] for r in records]) for m in METRICS} for p in records[0]["saliency_pairs"]
    }
    out["per_layer"], out["per_head"], out["best_head"], out["best_layer"] = {}, {}, {}, {}
    for s in SALIENCIES:
        out["per_layer"][s] = {m: _listed(_nanmean([r["per_layer"][s][m] for r in records])) for m in ("spearman", "coverage")}
        heads = {m: _listed(_nanmean([r["per_head"][s][m] for r in records])) for m in ("spearman", "coverage")}
        out["per_head"][s] = heads
        sp = np.array(heads["spearman"], dtype=np.float64)
        li, hi = np.unravel_index(int(np.nanargmax(sp)), sp.shape)
        out["best_head"][s] = {"site": f"L{li}H{hi}", "spearman": _round(sp[li, hi], 4), "coverage": heads["coverage"][li][hi]}
        ls = np.array(out["per_layer"][s]["spearman"], dtype=np.float64)
        lb = int(np.nanargmax(ls))
        out["best_layer"][s] = {"layer": lb, "spearman": _round(ls[lb], 4), "coverage": out["per_layer"][s]["coverage"][lb]}
        agg = out["aggregated"]["mean"][s]["spearman"]["value"]
        out.setdefault("heads_above_mean", {})[s] = int(np.sum(sp > agg)) if agg is not None else None
    out["chance_coverage"] = mean_ci([r["chance_coverage"] for r in records])
    out["mean_tokens"] = _round(float(np.mean([r["tokens"] for r in records])), 2)
    out["target_is_top1"] = _round(float(np.mean([bool(r["target_is_top1"]) for r in records])), 4)
    out["ig_delta_rel_max"] = _round(max((r["ig_delta_rel"] or 0.0) for r in records), 6)
    out["ig_delta_rel_median"] = _round(float(np.median([r["ig_delta_rel"] or 0.0 for r in records])), 6)
    out["seconds"] = _round(float(sum(r["seconds"] for r in records)), 1)
    return out


def run(
    model,
    tokenizer,
    task: str,
    items: int,
    ig_steps: int = 8,
    frac: float = 0.2,
    max_chars: int = 600,
    progress: bool = False,
    offset: int = 0,
    seed: int | None = None,
):
    """(records, summary) for ``items`` prompts of ``task`` (the first ones; ``offset`` / ``seed``: see
    :func:`item_indices`)."""
    if ig_steps < 2:
        raise ValueError(f"ig_steps={ig_steps} must be >= 2")
    if not 0 < frac <= 1:
        raise ValueError(f"top fraction {frac} must be in (0, 1]")
    ps = prompts(tokenizer, task, items, max_chars=max_chars, offset=offset, seed=seed)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    records, base = [], baseline_token(tokenizer)
    bar = Progress(
        TextColumn(f"attribution {task}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=not progress
    )
    with bar:
        job = bar.add_task(task, total=len(ps))
        for p in ps:
            records.append(attribute(model, p, ig_steps=ig_steps, frac=frac, tokenizer=tokenizer, baseline_id=base))
            bar.advance(job)
    return records, summarize(records)
