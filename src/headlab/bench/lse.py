"""``headlab bench lse``: the two log-sum-exp backends of the map-free statistics path, timed side by side.

``headlab.engine.lse.attention_lse`` returns the attention output and its log-sum-exp, from which the streaming
probes (sink, entropy, previous-token, distance) are computed without attention maps. On CPU it can run
``cpu_flash`` (``aten._scaled_dot_product_flash_attention_for_cpu``) or FlexAttention; torch's CPU
``torch.compile`` of FlexAttention refuses the LSE, so the CPU FlexAttention form is the uncompiled one, which
materialises the scores. This benchmark times both on the same seeded q, k, v (SmolLM2-135M's attention
shape: 9 query heads on 3 KV heads, expanded, d = 64, fp32, causal): per length one untimed warm-up of
each, then ``repeats`` rounds in which the two alternate (the first in even rounds, the second in odd
ones), and reports medians, ranges and the per-round ratio flex / cpu_flash, beside the largest difference
of their outputs and log-sum-exps. It also records ``default_backend`` for the device, so a reader can see
whether the default is the one that measured faster.
"""

from __future__ import annotations

import os
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from ..engine.lse import attention_lse, default_backend
from ..timing import alternate, load_text, spread
from .inputs import random_qkv
from .paired import write_run

BACKENDS = ("cpu_flash", "flex")
FORMAT = "headlab-bench-lse/1"


def _one(q, k, v, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, lse) of one causal call."""
    return attention_lse(q, k, v, q.shape[-1] ** -0.5, causal=True, backend=backend)


def run(lengths: list[int], repeats: int, threads: int, heads: int = 9, kv_heads: int = 3, dim: int = 64, log=print) -> dict:
    """Time both backends at every length; every sample is kept."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not lengths or min(lengths) < 2:
        raise ValueError(f"lengths must be integers >= 2, got {lengths}")
    if heads % kv_heads:
        raise ValueError(f"heads {heads} must be a multiple of kv_heads {kv_heads}")
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    out: dict = {}
    with torch.no_grad():
        for n in lengths:
            q, k, v = random_qkv(n, heads, kv_heads, dim)
            k, v = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
            res = {b: _one(q, k, v, b) for b in BACKENDS}  # untimed warm-up (and the outputs compared)
            max_o = float((res["flex"][0] - res["cpu_flash"][0]).abs().max())
            max_lse = float((res["flex"][1] - res["cpu_flash"][1]).abs().max())
            t = alternate({b: partial(_one, q, k, v, b) for b in BACKENDS}, repeats, warmup=0)  # warmed up above
            samples = [
                {"length": n, "repeat": r, "backend": b, "seconds": t.wall[b][r], "cpu_seconds": t.cpu[b][r]} for r, b in t.runs
            ]
            ratios = t.ratios("flex", "cpu_flash")
            out[str(n)] = {
                "seconds": {b: t.spread(b) for b in BACKENDS},
                "cpu_seconds": {b: spread(t.cpu[b]) for b in BACKENDS},
                "ratio": spread(ratios),
                "pair_ratios": ratios,
                "max_abs_diff_output": max_o,
                "max_abs_diff_lse": max_lse,
                "samples": samples,
            }
            log(
                f"{n} tokens: cpu_flash {t.median('cpu_flash'):.3f} s, flex {t.median('flex'):.3f} s, "
                f"flex / cpu_flash {statistics.median(ratios):.2f}x; max |diff| output {max_o:.2g}, lse {max_lse:.2g}"
            )
    return {
        "format": FORMAT,
        "config": {
            "lengths": list(lengths),
            "repeats": repeats,
            "threads": threads,
            "heads": heads,
            "kv_heads": kv_heads,
            "dim": dim,
            "dtype": "float32",
            "causal": True,
        },
        "default_backend": default_backend(torch.device("cpu")),
        "torch": torch.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "load": load_text(),
        "lengths": out,
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def table(res: dict) -> str:
    lines = [
        f"attention_lse on CPU, {res['config']['heads']} query / {res['config']['kv_heads']} KV heads (expanded), "
        f"d = {res['config']['dim']}, fp32, causal, {res['config']['threads']} threads, torch {res['torch']}; "
        f"default backend on CPU: {res['default_backend']}; load average at the end {res['load']}.",
        "",
        "| tokens | cpu_flash s | flex (uncompiled) s | flex / cpu_flash | max abs diff output | max abs diff lse |",
        "|---|---|---|---|---|---|",
    ]
    for n, r in res["lengths"].items():
        s, q = r["seconds"], r["ratio"]
        lines.append(
            f"| {n} | {s['cpu_flash']['median']:.3f} ({s['cpu_flash']['min']:.3f}–{s['cpu_flash']['max']:.3f}) | "
            f"{s['flex']['median']:.3f} ({s['flex']['min']:.3f}–{s['flex']['max']:.3f}) | {q['median']:.2f}x "
            f"({q['min']:.2f}–{q['max']:.2f}) | {r['max_abs_diff_output']:.2g} | {r['max_abs_diff_lse']:.2g} |"
        )
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = list(res["lengths"])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, b in enumerate(BACKENDS):
        med = [res["lengths"][n]["seconds"][b]["median"] for n in ns]
        lo = [m - res["lengths"][n]["seconds"][b]["min"] for m, n in zip(med, ns)]
        hi = [res["lengths"][n]["seconds"][b]["max"] - m for m, n in zip(med, ns)]
        ax.bar([j + 0.4 * i for j in range(len(ns))], med, width=0.4, yerr=[lo, hi], label=b)
    ax.set_xticks([j + 0.2 for j in range(len(ns))], [f"{n} tokens" for n in ns])
    ax.set_ylabel("seconds per call (median, range)")
    ax.set_title("attention_lse on CPU: cpu_flash vs FlexAttention (uncompiled)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(res: dict, out: str | Path, command: str) -> Path:
    """``out``: lse.json (config, summaries, every sample), lse.records.jsonl, table.md, lse.png."""
    return write_run(res, out, command, "lse", table, plot)
