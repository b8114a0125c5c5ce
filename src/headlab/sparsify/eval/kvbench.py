"""The headlab side of ``headlab bench kv``: dense and per-head plans (DuoAttention-style, arXiv 2410.10819; MoA,
arXiv 2406.14909; retrieval heads, arXiv 2404.15574; uniform StreamingLLM windows, arXiv 2309.17453) on the
long-context items (``headlab.data.longctx``), with the question fed after the context as kvpress does, each plan
with sparse or dense prefill (``headlab.kv_cache(..., prefill=...)``). Runs ``evaluate_suite`` (resumable through
its trial log) and returns one trial record per (configuration, item) in the format of ``headlab.bench.kv``.

    plans = [("duo", 0.35, load_plan("results/sparsify-plans/duo-0.35-4096.json"))]
    trials = headlab_trials(model, tok, items, plans, ("dense", "sparse"), TrialLog("out/headlab.trials.jsonl"))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...data.longctx import SuiteItem, item_key
from .log import TrialLog
from .suite import evaluate_suite, trial_key


def plan_label(method: str, fraction: float, prefill: str) -> str:
    return f"{method}@{fraction:g} ({prefill} prefill)"


def headlab_trials(
    model,
    tokenizer,
    items: Sequence[SuiteItem],
    plans: Sequence[tuple[str, float, Any]],
    prefills: Sequence[str],
    log: TrialLog,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Dense once and every (method, fraction, plan) under every prefill on every item (question after the
    context); trial records for ``headlab.bench.kv.rows``."""
    if not prefills:
        raise ValueError("prefills is empty: give 'sparse', 'dense' or both")
    out: list[dict] = []
    keys = [item_key(it) for it in items]
    for i, prefill in enumerate(prefills):
        configs = [(plan_label(m, f, prefill), p) for m, f, p in plans]
        evaluate_suite(model, tokenizer, configs, items, question="after", prefill=prefill, log=log, progress=progress)
        runs: list[tuple[str, str, float | None, Any]] = [("dense", "dense", None, None)] if i == 0 else []
        runs += [(plan_label(m, f, prefill), m, f, p) for m, f, p in plans]
        for label, method, fraction, p in runs:
            for it, k in zip(items, keys):
                r = log.find(**trial_key(it, k, label, p, "after", prefill, (0,)))
                if r is None:  # pragma: no cover - evaluate_suite just ran it
                    raise RuntimeError(f"{label}: no trial for {it.task} {it.index}")
                out.append(
                    {
                        "stack": "headlab",
                        "label": label,
                        "method": method,
                        "fraction": fraction,
                        "prefill": "dense" if p is None else prefill,
                        "question": "after",
                        "dataset": "passkey" if it.task == "passkey" else "suite",
                        "task": it.task,
                        "key": k,
                        "score": r["score"],
                        "correct": bool(r["correct"]),
                        "kv_fraction": r["kv_fraction"],
                        "cache_bytes": r["cache_bytes"],
                        "dense_bytes": r["dense_bytes"],
                        "prefill_s": r["prefill_s"],
                        "decode_s": r["decode_s"],
                        "text": r["text"],
                        "cache": r["cache"],
                    }
                )
    return out
