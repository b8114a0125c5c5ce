"""Speed only: whole-model prefill and greedy-decode time of per-head plans (DuoAttention-style
full/streaming heads, arXiv 2410.10819; MoA's elastic spans, arXiv 2406.14909) vs dense, repeats
alternated (dense, plan 1, ..., then reversed), reported as per-repeat ratios (median and range).
No quality is measured; ``headlab sparsify eval --plan`` does both.

    rows = bench_plans(model, tok, [("duo", load_plan("duo.json", model=model))], length=8192, repeats=3)
    print(format_speed(rows))
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch

from ...io import markdown_table
from ...timing import order, timed


@torch.no_grad()
def _prefill_s(model, ids: torch.Tensor) -> float:
    return timed(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1))[0]


def bench_plans(
    model,
    tokenizer,
    plans: Sequence[tuple[str, Any]],
    length: int,
    repeats: int = 3,
    new_tokens: int = 32,
    source: str = "essays",
    progress=None,
) -> list[dict]:
    """Per config (dense first): prefill seconds, decode tokens/s and the cache used, per repeat, and
    the ratios dense / config per repeat. The prompt is ``length`` tokens of ``source`` prose."""
    from ...data.passkey import haystack_ids
    from ...engine.hf import attach
    from .decode import decode_config

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _, p in plans:
        p.check_model(model)
    ids = torch.tensor(
        [haystack_ids(tokenizer, length, seed=777, source=source)], device=next(model.parameters()).device
    )  # (1, length)
    configs: list[tuple[str, Any]] = [("dense", None), *plans]
    res: dict[str, dict] = {
        label: {"prefill_s": [], "decode_s": [], "tok_s": [], "cache": set(), "note": set()} for label, _ in configs
    }
    for r in range(repeats):
        for label, p in order(configs, r):  # no warm-up round: the protocol of the committed speed results
            if p is None:
                res[label]["prefill_s"].append(_prefill_s(model, ids))
            else:
                with attach(model, pattern=p):
                    res[label]["prefill_s"].append(_prefill_s(model, ids))
            t, note = decode_config(model, p, ids, new_tokens)
            res[label]["decode_s"].append(t.decode_s)
            res[label]["tok_s"].append(t.tok_s)
            res[label]["cache"].add(t.cache)
            if note:
                res[label]["note"].add(note)
            if progress:
                progress(f"repeat {r + 1}/{repeats} · {label}")
    dense = res["dense"]
    rows = []
    for label, p in configs:
        x = res[label]
        pre = [a / b for a, b in zip(dense["prefill_s"], x["prefill_s"])]
        dec = [a / b for a, b in zip(dense["decode_s"], x["decode_s"])]
        rows.append(
            {
                "label": label,
                "length": length,
                "repeats": repeats,
                "new_tokens": new_tokens,
                "kv_fraction": 1.0 if p is None else p.kv_fraction(length),
                "prefill_s": x["prefill_s"],
                "decode_tok_s": x["tok_s"],
                "cache": "+".join(sorted(x["cache"])),
                "note": "; ".join(sorted(x["note"])),
                "prefill_speedup": statistics.median(pre),
                "prefill_range": [min(pre), max(pre)],
                "decode_speedup": statistics.median(dec),
                "decode_range": [min(dec), max(dec)],
            }
        )
    return rows


def format_speed(rows: Sequence[dict]) -> str:
    """Markdown table of ``bench_plans`` rows."""
    columns = ["config", "KV fraction", "prefill s (median)", "prefill speedup [range]", "decode tok/s (median)"]
    columns += ["decode speedup [range]", "cache"]
    return markdown_table(
        columns,
        (
            [
                r["label"],
                f"{r['kv_fraction']:.3f}",
                f"{statistics.median(r['prefill_s']):.2f}",
                f"{r['prefill_speedup']:.2f}x [{r['prefill_range'][0]:.2f}–{r['prefill_range'][1]:.2f}]",
                f"{statistics.median(r['decode_tok_s']):.1f}",
                f"{r['decode_speedup']:.2f}x [{r['decode_range'][0]:.2f}–{r['decode_range'][1]:.2f}]",
                f"{r['cache']}{' (' + r['note'] + ')' if r['note'] else ''}",
            ]
            for r in rows
        ),
    )
