"""``headlab bench plan``: how close a per-head plan's prefill comes to the time its kept attention work allows.

A plan (``headlab.patterns.load_plan``) keeps a share of each head's causal (query, key) pairs; only the
attention calls get cheaper, the rest of the forward (projections, rotary, MLP, norms, vocabulary head) does
not. So the best a plan can do on a given machine is

    ideal = non-attention time + kept share x dense attention time

where both times come from a profile of the same dense forward (:func:`ideal_plan`): attention time is the
wall time spent inside the model's attention calls, non-attention time the rest of the forward's wall time.
The kept share is :meth:`HeadPlan.density` at the measured length (kept causal pairs / causal pairs, averaged
over layers x heads; an all-causal layer counts 1). ``efficiency = ideal / measured plan time`` (1.0: the plan
gets all the speed its sparsity allows); ``speedup = dense / plan``.

How attention time is measured (directly, not with ``torch.profiler``): :class:`AttentionTimer` registers a
wrapper of the model's current attention function (transformers' ``AttentionInterface`` entry named by
``model.config._attn_implementation``: ``sdpa`` for the dense forward, headlab's ``headlab_N`` inside
``attach(model, pattern=plan)``) under a new name, switches the model to it for the block and accumulates the
wall time (``time.perf_counter``) of every call inside the forward. It counts everything the attention
function does: for dense, transformers' ``sdpa_attention_forward`` (GQA key/value expansion and the SDPA
kernel); for the plan, headlab's dispatch (mask to positions, per-head pattern masks or block-sparse kernels,
the plain SDPA path for all-causal layers). Query/key/value projections, rotary embeddings and the output
projection are outside it (they are in the attention *module*, not the attention *function*), as is the
mask built once per forward. The timer is on in both configurations (two clock reads per call, about a
microsecond each), so the totals are compared like for like. On CUDA each call is synchronised before and
after, which serialises the GPU and is only a profile.

The forward is the one behind ``headlab sparsify eval``'s prefill speedups (the passkey forward,
``headlab.data.passkey.check_answer``, and ``headlab.sparsify.eval.speed``): ``model(input_ids=ids,
use_cache=False, logits_to_keep=1)`` under ``torch.no_grad()``, dense and inside ``attach(model,
pattern=plan)`` (attach's set-up is not timed, as a scan or an eval enters it once for many texts). No KV cache
is filled (``headlab.sparsify.eval.decode``'s cache-filling prefill adds the cache write, a decode concern).

Protocol (:mod:`headlab.timing`): one untimed warm-up of each configuration, then ``repeats`` rounds
alternating dense and plan (reversed in odd rounds); medians and ranges over the rounds; the speedup and
efficiency are medians of per-round ratios (each plan time against the dense time of its own round), so a
slow drift of the machine's load moves both sides. Load averages before and after, and the CPU other
processes used during the rounds (``/proc/stat`` minus this process), are recorded with the numbers.
"""

from __future__ import annotations

import itertools
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..engine.hf import attach, model_shape
from ..timing import load_average, machine, order, spread, timed, versions
from .capture import prose_ids
from .paired import write_run

MODES = ("dense", "plan")
STEM = "plan"
_names = itertools.count()


# ------------------------------------------------------------------------------------------ the arithmetic
def ideal_plan(dense_s: float, attention_s: float, kept: float) -> dict[str, float]:
    """The ideal plan time from a profile of one dense forward: ``dense_s`` (the forward's wall time),
    ``attention_s`` (its time inside attention calls, 0 <= attention_s <= dense_s) and ``kept`` (the plan's
    kept share of attention work, 0..1). Returns {"other_s": dense_s - attention_s, "attention_s": kept x
    attention_s, "ideal_s": their sum}."""
    for name, v in (("dense_s", dense_s), ("attention_s", attention_s), ("kept", kept)):
        if not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if dense_s <= 0:
        raise ValueError(f"dense_s must be > 0, got {dense_s}")
    if not 0 <= attention_s <= dense_s:
        raise ValueError(f"attention_s must be in 0..dense_s ({dense_s}), got {attention_s}")
    if not 0 <= kept <= 1:
        raise ValueError(f"kept must be a share in 0..1, got {kept}")
    other = dense_s - attention_s
    return {"other_s": other, "attention_s": kept * attention_s, "ideal_s": other + kept * attention_s}


def efficiency(ideal_s: float, plan_s: float) -> float:
    """ideal / measured plan time (1.0: the plan is as fast as its kept attention work allows)."""
    if plan_s <= 0:
        raise ValueError(f"plan_s must be > 0, got {plan_s}")
    return ideal_s / plan_s


# ------------------------------------------------------------------------------------------ the timer
def _sync(t: torch.Tensor) -> None:
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


class AttentionTimer:
    """``with AttentionTimer(model) as t: model(...)``: ``t.seconds`` is the wall time spent inside the model's
    attention function during the block, ``t.calls`` how many calls it made. Works on any model that routes
    attention through transformers' ``AttentionInterface`` (not ``eager``), also inside ``attach``; the
    implementation in force before is restored on exit, also on errors."""

    def __init__(self, model) -> None:
        self.model = model
        self.seconds = 0.0
        self.calls = 0
        self._name: str | None = None
        self._before: str | None = None

    def __enter__(self) -> AttentionTimer:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        if not getattr(self.model, "_supports_attention_backend", False):
            raise ValueError(f"{type(self.model).__name__} does not route its attention through AttentionInterface")
        before = self.model.config._attn_implementation
        inner = AttentionInterface().get(before) if before else None
        if inner is None:
            raise ValueError(
                f"attention implementation {before!r} is not in transformers' AttentionInterface (eager has no entry): "
                "load the model with attn_implementation='sdpa'"
            )
        timer = self

        def timed_attention(module, query, key, value, *args, **kwargs):
            _sync(query)
            t0 = time.perf_counter()
            out = inner(module, query, key, value, *args, **kwargs)
            _sync(query)
            timer.seconds += time.perf_counter() - t0
            timer.calls += 1
            return out

        name = f"headlab_timed_{next(_names)}"
        AttentionInterface.register(name, timed_attention)  # pyright: ignore[reportArgumentType]
        AttentionMaskInterface.register(name, AttentionMaskInterface._global_mapping.get(before, sdpa_mask))
        self._name, self._before = name, before
        try:
            self.model.set_attn_implementation(name)
        except BaseException:
            self._unregister()
            raise
        return self

    def _unregister(self) -> None:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        name = self._name or ""
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)

    def __exit__(self, *exc) -> None:
        try:
            self.model.set_attn_implementation(self._before or "sdpa")
        finally:
            self._unregister()


# ------------------------------------------------------------------------------------------ the forward
def prefill(model, ids: torch.Tensor) -> None:
    """One prefill forward of ``ids`` (1, T): no KV cache, logits of the last position only."""
    with torch.no_grad():
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    _sync(ids)


def token_ids(tok, length: int, device=None) -> torch.Tensor:
    """(1, length) ids of the built-in prose (tiled when shorter), as ``headlab bench capture`` builds them."""
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
    return prose_ids(tok, max(length, 2))[:, :length].to(device or "cpu")


def max_length(model) -> int | None:
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    n = getattr(cfg, "max_position_embeddings", None)
    return int(n) if n else None


def check_length(model, length: int) -> None:
    """ValueError naming ``length`` and the valid range 1..the model's context."""
    hi = max_length(model)
    if not isinstance(length, int) or length < 1 or (hi is not None and length > hi):
        raise ValueError(f"--length {length} is out of range: valid lengths are 1..{hi if hi is not None else 'any'}")


def _one(model, ids: torch.Tensor, plan=None) -> dict[str, float]:
    """One timed prefill (dense, or inside ``attach(model, pattern=plan)``; attach's set-up untimed) with the
    attention timer on: {"seconds", "cpu_seconds", "attention_s", "attention_calls"}."""

    def run() -> dict[str, float]:
        with AttentionTimer(model) as t:
            wall, cpu, _ = timed(lambda: prefill(model, ids))
        return {"seconds": wall, "cpu_seconds": cpu, "attention_s": min(t.seconds, wall), "attention_calls": t.calls}

    if plan is None:
        return run()
    with attach(model, pattern=plan):
        return run()


# ------------------------------------------------------------------------------------------ machine load
def _cpu_ticks() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, of this process) so far; None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (sum(vals) - idle) / hz, own.ru_utime + own.ru_stime


class LoadWatch:
    """Start before the rounds, :meth:`stop` after: load averages before and after, and the cores' worth of
    CPU that other processes used meanwhile (``other_share``: 1.0 = one core busy all along)."""

    def __init__(self) -> None:
        self.before, self.t0, self.ticks = load_average(), time.perf_counter(), _cpu_ticks()

    def stop(self) -> dict[str, Any]:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        end = _cpu_ticks()
        other = None
        if end is not None and self.ticks is not None:
            other = max(0.0, (end[0] - self.ticks[0]) - (end[1] - self.ticks[1])) / wall
        return {"load_before": self.before, "load_after": load_average(), "other_share": other, "wall_s": wall}


# ------------------------------------------------------------------------------------------ the run
def measure(model, ids: torch.Tensor, plan, kept: float, repeats: int = 5, tick: Callable[[str], None] | None = None) -> dict:
    """Alternating rounds of dense and plan prefills of ``ids``: every sample, medians and ranges, the ideal and
    the efficiency (:func:`ideal_plan`, :func:`efficiency`) per round and from the medians."""
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    tick = tick or (lambda msg: None)
    T = int(ids.shape[1])
    n_layers = model_shape(model)[0]
    call = {"dense": lambda: _one(model, ids), "plan": lambda: _one(model, ids, plan)}
    for m in MODES:  # warm-up: allocator, kernels, attach's first-call set-up
        call[m]()
        tick(f"warm-up {m}")
    samples: list[dict] = []
    for r in range(repeats):
        for m in order(MODES, r):
            s = call[m]()
            if s["attention_calls"] != n_layers:
                raise RuntimeError(
                    f"{m}: the attention timer saw {s['attention_calls']} attention calls in one forward of a "
                    f"{n_layers}-layer model; the timing would not be the whole forward's"
                )
            samples.append({"length": T, "round": r, "mode": m, **s})
            tick(f"round {r + 1}/{repeats} {m}: {s['seconds']:.2f} s (attention {s['attention_s']:.2f} s)")
    by = {m: [s for s in samples if s["mode"] == m] for m in MODES}
    ideal = [ideal_plan(d["seconds"], d["attention_s"], kept) for d in by["dense"]]
    eff = [efficiency(i["ideal_s"], p["seconds"]) for i, p in zip(ideal, by["plan"])]
    speed = [d["seconds"] / p["seconds"] for d, p in zip(by["dense"], by["plan"])]

    def med(m: str, key: str) -> float:
        return statistics.median(s[key] for s in by[m])

    seconds = {m: spread([s["seconds"] for s in by[m]]) for m in MODES}
    attention = {m: spread([s["attention_s"] for s in by[m]]) for m in MODES}
    other = {m: spread([s["seconds"] - s["attention_s"] for s in by[m]]) for m in MODES}
    at_medians = ideal_plan(med("dense", "seconds"), min(med("dense", "attention_s"), med("dense", "seconds")), kept)
    ideal_attention, ideal_other = at_medians["attention_s"], at_medians["other_s"]
    return {
        "length": T,
        "kept": kept,
        "seconds": seconds,
        "attention_s": attention,
        "other_s": other,
        "attention_share": spread([d["attention_s"] / d["seconds"] for d in by["dense"]]),
        "ideal_s": spread([i["ideal_s"] for i in ideal]),
        "ideal_at_medians": at_medians,
        "speedup": spread(speed),
        "efficiency": spread(eff),
        "speedup_of_medians": seconds["dense"]["median"] / seconds["plan"]["median"],
        "efficiency_of_medians": at_medians["ideal_s"] / seconds["plan"]["median"],
        # where the plan loses against its ideal (medians; > 0 = slower than the ideal)
        "gap_s": {
            "attention": attention["plan"]["median"] - ideal_attention,
            "other": other["plan"]["median"] - ideal_other,
            "total": seconds["plan"]["median"] - at_medians["ideal_s"],
        },
        "pair_ratios": speed,
        "efficiencies": eff,
        "samples": samples,
    }


def run(
    model,
    tok,
    plan,
    length: int = 8192,
    repeats: int = 5,
    threads: int | None = None,
    model_name: str = "",
    plan_path: str = "",
    tick: Callable[[str], None] | None = None,
) -> dict:
    """{"config", "plan", "load", "lengths": {str(length): :func:`measure`}}. ``plan``: a ``HeadPlan`` made
    for ``model`` (checked); ``length`` must be within the model's context."""
    check_length(model, length)
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats!r}")
    plan.check_model(model)
    if threads:
        torch.set_num_threads(threads)
    kept = float(plan.density(length))
    ids = token_ids(tok, length, next(model.parameters()).device)
    watch = LoadWatch()
    res = measure(model, ids, plan, kept, repeats, tick)
    load = watch.stop()
    meta = plan.meta
    return {
        "config": {
            "model": model_name,
            "length": length,
            "repeats": repeats,
            "warmup": 1,
            "threads": torch.get_num_threads(),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "device": str(next(model.parameters()).device),
            "forward": "model(input_ids, use_cache=False, logits_to_keep=1), no grad",
            "attention_time": "wall time inside the model's AttentionInterface function (AttentionTimer), same forward",
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "cpu": platform.processor() or platform.machine(),
            "machine": machine(),
            "versions": versions(),
        },
        "plan": {
            "path": plan_path,
            "name": meta.get("name"),
            "method": meta.get("method"),
            "budget": meta.get("budget"),
            "plan_length": plan.length,
            "density_at_plan_length": meta.get("density"),
            "kept": kept,
            "kv_fraction": float(plan.kv_fraction(length)),
            "full_heads": sum(len(r) for r in plan.full_heads()),
            "heads": plan.n_layers * len(plan.entries[0]),
            "sparse_layers": len(plan),
        },
        "load": load,
        "lengths": {str(length): res},
    }


# ------------------------------------------------------------------------------------------ output
def _fmt(s: dict, unit: str = " s", digits: int = 2) -> str:
    return f"{s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


def rows(res: dict) -> list[list[str]]:
    """The table's rows: [quantity, dense, ideal plan, measured plan]."""
    r = next(iter(res["lengths"].values()))
    i = r["ideal_at_medians"]
    return [
        ["prefill", _fmt(r["seconds"]["dense"]), f"{i['ideal_s']:.2f} s", _fmt(r["seconds"]["plan"])],
        ["attention calls", _fmt(r["attention_s"]["dense"]), f"{i['attention_s']:.2f} s", _fmt(r["attention_s"]["plan"])],
        ["outside attention", _fmt(r["other_s"]["dense"]), f"{i['other_s']:.2f} s", _fmt(r["other_s"]["plan"])],
    ]


def summary_lines(res: dict) -> list[str]:
    c, p, ld = res["config"], res["plan"], res["load"]
    r = next(iter(res["lengths"].values()))
    g = r["gap_s"]
    load = " / ".join("?" if x is None else " ".join(f"{v:.1f}" for v in x) for x in (ld["load_before"], ld["load_after"]))
    other = "?" if ld["other_share"] is None else f"{ld['other_share']:.2f}"
    return [
        f"plan {p['path'] or p['name'] or ''} ({p['method']}, {p['full_heads']}/{p['heads']} full heads): kept share of "
        f"attention work at {c['length']} tokens {p['kept']:.3f}; dense attention share {_fmt(r['attention_share'], '', 3)}",
        f"speedup dense / plan {_fmt(r['speedup'], 'x')}; efficiency ideal / plan {_fmt(r['efficiency'], '', 3)} "
        f"(medians of {c['repeats']} alternating rounds [range])",
        f"gap to the ideal (medians): attention calls {g['attention']:+.2f} s, outside attention {g['other']:+.2f} s",
        f"{c['model']}, {c['dtype']}, {c['threads']} threads; load average before / after: {load}; other processes "
        f"used {other} cores during the rounds",
    ]


def table(res: dict) -> str:
    """Markdown: the three bars' numbers and the summary."""
    from ..io import markdown_table

    head = markdown_table(["", "dense", "ideal plan", "measured plan"], rows(res))
    return head + "\n\n" + "\n".join(f"- {x}" for x in summary_lines(res)) + "\n"


def plot(res: dict, path: Path) -> None:
    """Stacked bars: dense, ideal plan, measured plan, each split into attention calls and the rest (medians)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = next(iter(res["lengths"].values()))
    i = r["ideal_at_medians"]
    attn = [r["attention_s"]["dense"]["median"], i["attention_s"], r["attention_s"]["plan"]["median"]]
    rest = [r["other_s"]["dense"]["median"], i["other_s"], r["other_s"]["plan"]["median"]]
    labels = ["dense", "ideal plan", "measured plan"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.bar(labels, rest, color="C7", label="outside attention")
    ax.bar(labels, attn, bottom=rest, color="C0", label="attention calls")
    for x, (a, b) in enumerate(zip(attn, rest)):
        ax.text(x, a + b, f"{a + b:.2f} s", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("prefill seconds (median)")
    ax.set_title(
        f"{res['config']['length']} tokens, kept {r['kept']:.2f}: speedup {r['speedup']['median']:.2f}x, "
        f"efficiency {r['efficiency']['median']:.2f}",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(res: dict, out: str | Path, command: str) -> Path:
    """``out``: plan.json (command, config, plan, load, every sample, medians, ranges), plan.records.jsonl,
    table.md and plan.png, written atomically."""
    return write_run(res, out, command, STEM, table, plot)
