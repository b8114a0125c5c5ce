"""Training-free sparse-attention swaps on a real model, measured: passkey retrieval accuracy,
perplexity on real prose and whole-model prefill wall time, dense vs each pattern vs a
StreamingLLM sink+window of matched density (the control SPEC §C1/§C2 ask for).

    from headlab import sparsify, load
    model, tok = load()
    rows = sparsify.evaluate(model, tok, [("power", patterns.power(64, 4, 1))], lengths=[2048], trials=20)
    sparsify.write_report(rows, "runs/sparsify")   # results.json, table.md, plot.png

Every sparse config leaves ``dense_layers`` dense (default: layer 0). Passkey items come from
``headlab.data.passkey`` with needle depths spread over 10-90 %.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import patterns as P
from .patterns.base import Pattern

SINK = 64


def cli_pattern(name: str) -> Pattern:
    """Patterns sized for SmolLM2 (30 layers, 9 query / 3 KV heads) by CLI name."""
    table: dict[str, Callable[[], Pattern]] = {
        "window": lambda: P.window(512),
        "sink_window": lambda: P.sink_window(SINK, 512),
        "power": lambda: P.power(64, 4, 1),
        "strided": lambda: P.strided(64, 4, 3, n_heads=3),
        "moa": lambda: P.moa([(256, 0.0), (128, 0.125), (0, 0.25)], sink=SINK, kv_per_head=True),
        "halo": lambda: P.halo(256, 256, causal=True),
        "neighborhood": lambda: P.neighborhood(512, 1, causal=True),
        "topk_blocks": lambda: P.topk_blocks(64, 6, sink_blocks=1, local_blocks=2),
        "dhsa": lambda: P.dhsa(block=64, topk_tokens=512, local_tokens=128, global_tokens=64),
    }
    if name not in table:
        raise ValueError(f"unknown pattern {name!r} for sparsify eval; choose one of {sorted(table)}")
    return table[name]()


def nominal_density(p: Pattern, n: int) -> float:
    """Density among causal pairs at length n; for dynamic patterns, the budget they keep."""
    if not p.dynamic:
        return p.density(n, n)
    rows = torch.arange(n, dtype=torch.float64)
    from .patterns.topk import TopKBlocks

    if isinstance(p, TopKBlocks):
        budget = (p.k + p.local_blocks + p.sink_blocks) * p.block
        kept = torch.minimum(rows + 1, torch.full_like(rows, budget))
    else:  # DHSA: topk_tokens per query block, instruction rows dense
        kept = torch.minimum(rows + 1, torch.full_like(rows, max(p.topk_tokens, p.local_tokens + p.global_tokens)))
        if p.instruction_tokens:
            kept[-p.instruction_tokens:] = rows[-p.instruction_tokens:] + 1
    return float(kept.sum() / (rows + 1).sum())


def sink_window_density(sink: int, size: int, n: int) -> float:
    i = torch.arange(n, dtype=torch.float64)
    seen = torch.minimum(i + 1, torch.full_like(i, size)) + torch.clamp(torch.minimum(i + 1 - size, torch.full_like(i, sink)), min=0)
    return float(seen.sum() / (i + 1).sum())


def matched_window(density: float, n: int, sink: int = SINK) -> Pattern:
    """sink_window(sink, w) whose density at length n is closest to ``density``."""
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi) // 2
        if sink_window_density(sink, mid, n) < density:
            lo = mid + 1
        else:
            hi = mid
    return P.sink_window(sink, lo)


def passkey_depths(trials: int) -> list[float]:
    """``trials`` needle depths spread evenly over 10 %-90 %."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    return [0.1 + 0.8 * t / max(1, trials - 1) for t in range(trials)] if trials > 1 else [0.5]


@dataclass
class Row:
    label: str
    pattern: str
    length: int
    density: float          # density of the pattern itself (causal pairs)
    model_density: float    # averaged over all layers (dense layers count 1)
    accuracy: float
    trials: int
    ppl: float
    prefill_s: float        # mean whole-model prefill time of one passkey prompt
    speedup: float = 1.0    # dense prefill time / this prefill time (same length)


def _layer_map(p: Pattern | None, n_layers: int, dense_layers: Sequence[int]):
    if p is None:
        return None
    return {layer: p for layer in range(n_layers) if layer not in set(dense_layers)}


@torch.no_grad()
def perplexity(model, tokenizer, n_tokens: int, seed: int = 0) -> float:
    """Perplexity of the model on ~n_tokens tokens of real prose (headlab.data.prose)."""
    from .data.prose import haystack

    ids = tokenizer(haystack(tokenizer, n_tokens, seed=seed + 101), add_special_tokens=False)["input_ids"][:n_tokens]
    x = torch.tensor([ids])
    out = model(input_ids=x, labels=x, use_cache=False)
    return float(torch.exp(out.loss))


def evaluate(model, tokenizer, configs: Sequence[tuple[str, Pattern | None]], lengths: Sequence[int], trials: int = 20,
             dense_layers: Sequence[int] = (0,), matched: bool = True, progress=None) -> list[Row]:
    """Dense + every config (+ a sink_window of matched density when ``matched``) at each length."""
    from .data.passkey import answer_correct, make_passkey
    from .hf import attach, model_shape

    n_layers = model_shape(model)[0]
    for layer in dense_layers:
        if not 0 <= layer < n_layers:
            raise ValueError(f"dense layer {layer} out of range: valid layers are 0..{n_layers - 1}")
    rows: list[Row] = []
    for n in lengths:
        items = [make_passkey(tokenizer, n, d, seed=s) for s, d in enumerate(passkey_depths(trials))]
        runs: list[tuple[str, Pattern | None]] = [("dense", None)]
        for label, p in configs:
            runs.append((label, p))
            if matched and p is not None:
                w = matched_window(nominal_density(p, n), n)
                runs.append((f"{w.describe()} [matched to {label}]", w))
        dense_time = None
        for label, p in runs:
            layer_map = _layer_map(p, n_layers, dense_layers)
            ctx = attach(model, pattern=layer_map) if layer_map else contextlib.nullcontext()
            hits, times = 0, []
            with ctx:
                for it in items:
                    t0 = time.perf_counter()
                    hits += int(answer_correct(model, tokenizer, it))
                    times.append(time.perf_counter() - t0)
                    if progress:
                        progress(f"{n} tok · {label}")
                ppl = perplexity(model, tokenizer, n)
                if progress:
                    progress(f"{n} tok · {label} (ppl)")
            dens = 1.0 if p is None else nominal_density(p, n)
            n_sparse = 0 if p is None else n_layers - len(set(dense_layers))
            t = sorted(times)[len(times) // 2]  # median: robust to other jobs on the machine
            if p is None:
                dense_time = t
            rows.append(Row(label=label, pattern="dense" if p is None else p.describe(), length=n, density=dens,
                            model_density=(n_layers - n_sparse + n_sparse * dens) / n_layers,
                            accuracy=hits / len(items), trials=len(items), ppl=ppl, prefill_s=t,
                            speedup=(dense_time / t) if dense_time else 1.0))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    lines = ["| length | config | density | model density | passkey acc | ppl | prefill s | speedup |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.length} | {r.label} | {r.density:.3f} | {r.model_density:.3f} | "
                     f"{r.accuracy:.2f} ({round(r.accuracy * r.trials)}/{r.trials}) | {r.ppl:.2f} | "
                     f"{r.prefill_s:.2f} | {r.speedup:.2f}x |")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_write_bytes

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for n in sorted({r.length for r in rows}):
        rs = [r for r in rows if r.length == n]
        for ax, key in zip(axes, ("accuracy", "speedup")):
            ax.scatter([r.density for r in rs], [getattr(r, key) for r in rs], label=f"{n} tokens")
            for r in rs:
                ax.annotate(r.label.split(" [")[0][:22], (r.density, getattr(r, key)), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    axes[0].set(xlabel="pattern density (causal pairs kept)", ylabel="passkey accuracy", ylim=(-0.05, 1.05),
                title="passkey accuracy vs density")
    axes[1].set(xlabel="pattern density (causal pairs kept)", ylabel="prefill speedup vs dense SDPA",
                title="whole-model prefill speedup vs density")
    axes[1].axhline(1.0, color="grey", lw=0.8)
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    import io as _io
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_report(rows: Sequence[Row], out_dir, command: str = "") -> Path:
    """results.json, table.md and plot.png in ``out_dir`` (written atomically)."""
    from .io import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", {"command": command, "rows": [asdict(r) for r in rows]})
    atomic_write_text(out / "table.md", (f"`{command}`\n\n" if command else "") + format_table(rows) + "\n")
    plot(rows, out / "plot.png")
    return out
