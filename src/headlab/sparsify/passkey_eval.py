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
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from .. import patterns as P
from ..patterns.base import Pattern

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
    from ..patterns.topk import TopKBlocks

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
    prefill_s: float        # median whole-model prefill time of one passkey prompt
    speedup: float = 1.0    # dense median prefill time / this one (same length, timed interleaved)
    answer_logprob: float = float("nan")  # mean log-probability of the key's tokens
    by_depth: list = field(default_factory=list)  # [needle depth, correct, key log-prob] per trial


def _layer_map(p: Pattern | None, n_layers: int, dense_layers: Sequence[int]):
    if p is None:
        return None
    return {layer: p for layer in range(n_layers) if layer not in set(dense_layers)}


@torch.no_grad()
def perplexity(model, tokenizer, n_tokens: int, seed: int = 0, source: str = "essays") -> float:
    """Perplexity of the model on ``n_tokens`` tokens of real prose ("essays": RULER's Paul Graham
    essays; "pydoc": CPython help prose), from a seed not used by the passkey items."""
    from ..data.passkey import haystack_ids

    x = torch.tensor([haystack_ids(tokenizer, n_tokens, seed + 101, source)], device=next(model.parameters()).device)
    out = model(input_ids=x, labels=x, use_cache=False)
    return float(torch.exp(out.loss))


class TrialLog:
    """Append-only JSON-lines log of every passkey trial and perplexity run (``trials.jsonl``).

    A long run (hours at 8K tokens on a CPU) can be stopped and resumed: records already in the log
    are not recomputed (a record is keyed by length, config label, pattern, dense layers, haystack,
    item seed and needle depth; resume with the same model). A torn last line (the process was
    killed mid-write) is ignored."""

    def __init__(self, path=None, resume: bool = False):
        self.path = Path(path) if path else None
        self.records: list[dict] = []
        if self.path and self.path.exists():
            if resume:
                for line in self.path.read_text().splitlines():
                    try:
                        self.records.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
            else:
                self.path.unlink()

    def find(self, **key) -> dict | None:
        for r in self.records:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def add(self, record: dict) -> None:
        self.records.append(record)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()


def plan_runs(configs: Sequence[tuple[str, Pattern | None]], n: int, matched: bool) -> list[tuple[str, Pattern | None]]:
    """dense, then every config followed by its matched-density sink_window (when ``matched``)."""
    runs: list[tuple[str, Pattern | None]] = [("dense", None)]
    for label, p in configs:
        runs.append((label, p))
        if matched and p is not None:
            w = matched_window(nominal_density(p, n), n)
            runs.append((f"{w.describe()} [matched to {label}]", w))
    return runs


def evaluate(model, tokenizer, configs: Sequence[tuple[str, Pattern | None]], lengths: Sequence[int], trials: int = 20,
             dense_layers: Sequence[int] = (0,), matched: bool = True, progress=None, source: str = "essays",
             log: TrialLog | None = None) -> list[Row]:
    """Dense + every config (+ a sink_window of matched density when ``matched``) at each length.

    Passkey prompts are exactly ``n`` tokens (``passkey_ids``); for each prompt every configuration
    runs in turn, so the prefill timings of dense and sparse are interleaved and their ratio is
    robust to other load on the machine. ``log`` (a ``TrialLog``) records every trial and lets a
    stopped run resume."""
    from ..data.passkey import check_answer, passkey_ids
    from ..engine.hf import attach, model_shape

    n_layers = model_shape(model)[0]
    for layer in dense_layers:
        if not 0 <= layer < n_layers:
            raise ValueError(f"dense layer {layer} out of range: valid layers are 0..{n_layers - 1}")
    log = log or TrialLog()
    rows: list[Row] = []
    for n in lengths:
        items = [passkey_ids(tokenizer, n, d, seed=s, source=source) for s, d in enumerate(passkey_depths(trials))]
        runs = plan_runs(configs, n, matched)

        def context(p):
            layer_map = _layer_map(p, n_layers, dense_layers)
            return attach(model, pattern=layer_map) if layer_map else contextlib.nullcontext()

        for it in items:
            for label, p in runs:
                key = dict(kind="passkey", length=n, label=label, seed=it.seed, depth=it.depth,
                           **_setting(p, source, dense_layers))
                if log.find(**key) is None:
                    with context(p):
                        t0 = time.perf_counter()
                        ok, logp = check_answer(model, tokenizer, it)
                        dt = time.perf_counter() - t0
                    log.add({**key, "correct": ok, "logprob": logp, "seconds": dt})
                if progress:
                    progress(f"{n} tok · {label}")
        for label, p in runs:
            key = dict(kind="ppl", length=n, label=label, **_setting(p, source, dense_layers))
            if log.find(**key) is None:
                with context(p):
                    log.add({**key, "ppl": perplexity(model, tokenizer, n, source=source)})
            if progress:
                progress(f"{n} tok · {label} (ppl)")
        rows.extend(_rows(log, runs, n, source, [(it.seed, it.depth) for it in items], n_layers, dense_layers))
    return rows


def _setting(p: Pattern | None, source: str, dense_layers: Sequence[int]) -> dict:
    """What a logged record depends on besides length/label/seed (so --resume never mixes settings)."""
    return {"pattern": "dense" if p is None else p.describe(), "source": source,
            "dense_layers": [] if p is None else sorted(set(dense_layers))}


def _rows(log: TrialLog, runs, n: int, source: str, seeds: Sequence[tuple[int, float]], n_layers: int,
          dense_layers) -> list[Row]:
    out: list[Row] = []
    dense_time = None
    for label, p in runs:
        setting = _setting(p, source, dense_layers)
        recs = [log.find(kind="passkey", length=n, label=label, seed=s, depth=d, **setting) for s, d in seeds]
        times = sorted(r["seconds"] for r in recs)
        t = times[len(times) // 2]  # median
        if p is None:
            dense_time = t
        dens = 1.0 if p is None else nominal_density(p, n)
        n_sparse = 0 if p is None else n_layers - len(set(dense_layers))
        out.append(Row(label=label, pattern="dense" if p is None else p.describe(), length=n, density=dens,
                       model_density=(n_layers - n_sparse + n_sparse * dens) / n_layers,
                       accuracy=sum(r["correct"] for r in recs) / len(recs), trials=len(recs),
                       ppl=log.find(kind="ppl", length=n, label=label, **setting)["ppl"], prefill_s=t,
                       speedup=(dense_time / t) if dense_time else 1.0,
                       answer_logprob=sum(r["logprob"] for r in recs) / len(recs),
                       by_depth=[[r["depth"], r["correct"], r["logprob"]] for r in recs]))
    return out


def format_table(rows: Sequence[Row]) -> str:
    lines = ["| length | config | density | model density | passkey acc | key log-prob | ppl | prefill s | speedup |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.length} | {r.label} | {r.density:.3f} | {r.model_density:.3f} | "
                     f"{r.accuracy:.2f} ({round(r.accuracy * r.trials)}/{r.trials}) | {r.answer_logprob:.2f} | "
                     f"{r.ppl:.2f} | {r.prefill_s:.2f} | {r.speedup:.2f}x |")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_write_bytes

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    longest = max(r.length for r in rows)
    for r in rows:
        if r.length == longest and r.by_depth:
            pts = sorted(r.by_depth)
            axes[2].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", ms=3, lw=1,
                         label=r.label.split(" [")[0][:28] + (" (matched)" if " [" in r.label else ""))
    axes[2].set(xlabel="needle depth in the prompt", ylabel="mean log-prob of the key's tokens",
                title=f"passkey key log-prob vs depth at {longest} tokens")
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
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    import io as _io
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_report(rows: Sequence[Row], out_dir, command: str = "") -> Path:
    """results.json, table.md and plot.png in ``out_dir`` (written atomically)."""
    from ..io import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", {"command": command, "rows": [asdict(r) for r in rows]})
    atomic_write_text(out / "table.md", (f"`{command}`\n\n" if command else "") + format_table(rows) + "\n")
    plot(rows, out / "plot.png")
    return out
