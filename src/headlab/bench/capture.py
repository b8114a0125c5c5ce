"""``headlab bench capture``: what scan's streaming probes cost on top of a plain SDPA forward.

At each length, one text of real prose (``headlab.data.prose``, tiled if shorter) runs through the
model's base (no vocabulary projection, as ``headlab scan`` runs it) twice per repeat: plainly
(``dense``: transformers' SDPA attention) and inside ``attach(model, probes=...)`` (``probes``: the
log-sum-exp / augmented-value statistics path of the streaming probes). After one untimed warm-up of
each, the two alternate — dense first in even repeats, probes first in odd ones — so both see the
same machine load; the reported ratio is the median of the per-repeat ratios probes / dense, with
their range, beside the ratio of the medians and the same by process CPU time. Absolute seconds on
a shared machine move with its load; the ratios much less.

The model and tokenizer come from the caller (the CLI loads them), so this module never loads one.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..data import prose
from ..engine.hf import attach
from .paired import spread, write_run

MODES = ("dense", "probes")


def prose_ids(tok, length: int) -> torch.Tensor:
    """(1, length) token ids of the built-in prose, repeated when it is shorter than ``length``."""
    if not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2, got {length!r}")
    ids = tok(" ".join(prose.texts()), return_tensors="pt")["input_ids"][0]
    if ids.numel() == 0:
        raise ValueError("the tokenizer returned no tokens for the built-in prose")
    reps = -(-length // ids.numel())
    return ids.repeat(reps)[:length].unsqueeze(0)


def base_forward(model, ids: torch.Tensor) -> None:
    """One forward of ``ids`` (B, T) through the base model (no vocabulary projection), no KV cache."""
    base = getattr(model, "base_model", None) if hasattr(model, "lm_head") else None
    with torch.no_grad():
        (base if base is not None and base is not model else model)(input_ids=ids, use_cache=False)


def _timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def measure_length(model, ids: torch.Tensor, probes: Sequence[str], repeats: int, tick=None) -> dict:
    """Alternating timings at one length: samples, medians, per-repeat ratios (probes / dense)."""
    tick = tick or (lambda msg: None)
    names = list(probes)

    def dense() -> tuple[float, float]:
        return _timed(lambda: base_forward(model, ids))

    seen: list[int] = []

    def with_probes() -> tuple[float, float]:
        # attach's setup (patching, probe objects) is not timed: a scan enters it once for all its texts
        with attach(model, probes=names) as run:
            t = _timed(lambda: base_forward(model, ids))
        # every probe must have seen every layer, else the timing measured less than a scan does
        seen.append(min(int((p.state_dict()["count"] > 0).any(1).sum()) for p in run.probes))
        return t

    call = {"dense": dense, "probes": with_probes}
    for m in MODES:  # warm-up: allocator, kernels, attach's first-call setup
        call[m]()
        tick(f"warm-up {m}")
    samples = []
    for r in range(repeats):
        for m in MODES if r % 2 == 0 else MODES[::-1]:
            wall, cpu = call[m]()
            samples.append({"length": int(ids.shape[1]), "repeat": r, "mode": m, "seconds": wall, "cpu_seconds": cpu})
            tick(f"repeat {r + 1}/{repeats} {m}: {wall:.2f} s")
    by = {m: [s for s in samples if s["mode"] == m] for m in MODES}
    ratio = [p["seconds"] / d["seconds"] for d, p in zip(by["dense"], by["probes"])]
    cpu_ratio = [p["cpu_seconds"] / d["cpu_seconds"] for d, p in zip(by["dense"], by["probes"]) if d["cpu_seconds"] > 0]
    med = {m: statistics.median(s["seconds"] for s in by[m]) for m in MODES}
    return {
        "length": int(ids.shape[1]),
        "seconds": {m: spread([s["seconds"] for s in by[m]]) for m in MODES},
        "ratio": spread(ratio),
        "ratio_of_medians": med["probes"] / med["dense"],
        "cpu_ratio": spread(cpu_ratio) if cpu_ratio else None,
        "pair_ratios": ratio,
        "layers_seen": min(seen),
        "samples": samples,
    }


def run(
    model,
    tok,
    lengths: Sequence[int],
    probes: Sequence[str],
    repeats: int = 5,
    threads: int | None = None,
    model_name: str = "",
    tick=None,
) -> dict:
    """{"config", "lengths": {str(T): measure_length(...)}} for every length, in the given order."""
    if not lengths or any(not isinstance(n, int) or n < 2 for n in lengths):
        raise ValueError(f"lengths must be ints >= 2, got {list(lengths)!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if not probes:
        raise ValueError("probes must name at least one probe (e.g. sink,entropy)")
    if threads:
        torch.set_num_threads(threads)
    n_layers = int(getattr(model.config, "num_hidden_layers", 0))
    out = {}
    for n in lengths:
        res = measure_length(model, prose_ids(tok, n), probes, repeats, tick)
        if n_layers and res["layers_seen"] != n_layers:
            raise RuntimeError(f"the probes saw {res['layers_seen']} of {n_layers} layers at T={n}; the timing is not a scan's")
        out[str(n)] = res
    return {
        "config": {
            "model": model_name,
            "lengths": list(lengths),
            "repeats": repeats,
            "probes": list(probes),
            "threads": torch.get_num_threads(),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "cpu": platform.processor() or platform.machine(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "lengths": out,
    }


def table(res: dict) -> str:
    c = res["config"]
    lines = [
        f"{c['model']}, {c['dtype']}, {c['threads']} threads, probes {', '.join(c['probes'])}; "
        f"{c['repeats']} alternating repeats after one warm-up each (median [min–max]).",
        "",
        "| tokens | dense s | with probes s | ratio (median of pairs) | ratio range | ratio of medians | CPU-time ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, r in res["lengths"].items():
        s, q = r["seconds"], r["ratio"]
        cpu = "–" if r["cpu_ratio"] is None else f"{r['cpu_ratio']['median']:.2f}x"
        lines.append(
            f"| {n} | {s['dense']['median']:.2f} [{s['dense']['min']:.2f}–{s['dense']['max']:.2f}] | "
            f"{s['probes']['median']:.2f} [{s['probes']['min']:.2f}–{s['probes']['max']:.2f}] | {q['median']:.2f}x | "
            f"{q['min']:.2f}–{q['max']:.2f}x | {r['ratio_of_medians']:.2f}x | {cpu} |"
        )
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    """Per-repeat ratios (probes / dense) against length, with the medians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ns = [int(n) for n in res["lengths"]]
    for n in ns:
        r = res["lengths"][str(n)]
        ax.scatter([n] * len(r["pair_ratios"]), r["pair_ratios"], color="C0", alpha=0.6, s=18)
        ax.scatter([n], [r["ratio"]["median"]], color="C3", marker="_", s=400)
    ax.axhline(1.0, color="grey", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("tokens")
    ax.set_ylabel("time with probes / plain SDPA")
    ax.set_title("scan's streaming probes: cost per forward (dots: repeats, bar: median)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(res: dict, out: str | Path, command: str) -> Path:
    """``out``: capture.json (config, summaries, samples), capture.records.jsonl, table.md, capture.png."""
    return write_run(res, out, command, "capture", table, plot)
