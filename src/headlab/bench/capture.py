"""``headlab bench capture``: what scan's streaming probes cost on top of a plain SDPA forward.

At each length, one text of real prose (``headlab.data.prose``, tiled if shorter) runs through the
model's base (no vocabulary projection, as ``headlab scan`` runs it) twice per repeat: plainly
(``dense``: transformers' SDPA attention) and inside ``attach(model, probes=...)`` (``probes``: the
log-sum-exp / augmented-value statistics path of the streaming probes). After one untimed warm-up of
each, the two alternate — dense first in even repeats, probes first in odd ones — so both see the
same machine load; the reported ratio is the median of the per-repeat ratios probes / dense, with
their range, beside the ratio of the medians and the same by process CPU time. Absolute seconds on
a shared machine move with its load; the ratios much less.

The probes default to the per-text metrics of the default scan (``headlab.probes.default_query_metrics``:
every one with a map-free form next to SDPA); ``magnet`` gets the token state a scan gives it.

Peak memory (``rss=True``): per length, each mode runs once more in a fresh Python process
(:func:`rss_child`) that loads the model, resets the peak resident set size after loading
(``/proc/self/clear_refs``, Linux) and reports ``VmHWM`` after one forward: the peak RSS of the process
while the forward runs, weights included; the ratio probes / dense is what the probes add. Both modes run
with glibc's mmap threshold fixed (:data:`RSS_ENV`), so that freed tensors leave the resident set and the
peak measures live memory rather than heap fragmentation. Where the reset is not available, ``ru_maxrss``
(which includes the load) is reported and ``method`` says so.

The model and tokenizer for the timings come from the caller (the CLI loads them); the RSS children load
the model by its name (``headlab.models.load``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..data import prose
from ..engine.hf import attach
from ..probes.magnet import magnet_state
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


def probe_state(tok, ids: torch.Tensor, probes: Sequence[str]) -> dict:
    """The ``attach`` state the probes need as a scan gives it (``magnet``: each key's token, the magnet ids)."""
    return magnet_state(tok, ids) if "magnet" in probes else {}


def measure_length(model, ids: torch.Tensor, probes: Sequence[str], repeats: int, tick=None, state=None) -> dict:
    """Alternating timings at one length: samples, medians, per-repeat ratios (probes / dense).
    ``state``: the ``attach`` state of the probes (:func:`probe_state`)."""
    tick = tick or (lambda msg: None)
    names = list(probes)

    def dense() -> tuple[float, float]:
        return _timed(lambda: base_forward(model, ids))

    seen: list[int] = []

    def with_probes() -> tuple[float, float]:
        # attach's setup (patching, probe objects) is not timed: a scan enters it once for all its texts
        with attach(model, probes=names, state=dict(state or {})) as run:
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


#: environment of the peak-RSS processes: glibc serves every block over 128 KiB by mmap and returns it on free
#: (a fixed threshold: by default it adapts, and the heap then keeps freed tensors, which made repeated runs of
#: the same forward differ by about 6 % at 4096 tokens); both modes run with it
RSS_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _peak_kb() -> tuple[int, str]:
    """(peak resident set size in KiB, method) of this process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]), "VmHWM"
    except OSError:
        pass
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (kb // 1024 if sys.platform == "darwin" else kb), "ru_maxrss"


def rss_child(spec: dict) -> dict:
    """In a fresh process: load ``spec["model"]``, reset the peak RSS, run one forward of ``spec["length"]``
    prose tokens (``spec["mode"]``: "dense", or "probes" with ``spec["probes"]`` attached) and return
    ``{"peak_mb", "after_load_mb", "method"}`` (method: "VmHWM after reset", or "ru_maxrss" including the load)."""
    from ..models import load

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    model, tok = load(spec["model"])
    ids = prose_ids(tok, int(spec["length"]))
    names = list(spec.get("probes") or [])
    state = probe_state(tok, ids, names) if spec["mode"] == "probes" else {}
    import gc

    gc.collect()
    after, _ = _peak_kb()
    method = "ru_maxrss (includes the load)"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        after, method = _peak_kb()[0], "VmHWM after reset"
    except OSError:
        pass
    if spec["mode"] == "probes":
        with attach(model, probes=names, state=state):
            base_forward(model, ids)
    else:
        base_forward(model, ids)
    peak, _ = _peak_kb()
    return {"peak_mb": peak / 1024, "after_load_mb": after / 1024, "method": method}


def measure_rss(model_name: str, length: int, probes: Sequence[str], threads: int | None = None) -> dict:
    """Peak RSS of one forward with and without the probes, each in a fresh process (:func:`rss_child`):
    ``{"dense", "probes"}`` (MiB), ``"ratio"`` = probes / dense, ``"method"``."""
    if not model_name:
        raise ValueError("rss needs a model name or folder that headlab.models.load can load in a fresh process")
    out: dict = {}
    for mode in ("dense", "probes"):
        spec = {"model": model_name, "length": int(length), "mode": mode, "probes": list(probes), "threads": threads}
        code = (
            "import json, sys; from headlab.bench.capture import rss_child; print(json.dumps(rss_child(json.loads(sys.argv[1]))))"
        )
        env = {**os.environ, **RSS_ENV}
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"peak-RSS run ({mode}, T={length}) failed: {proc.stderr.strip()[-2000:]}")
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "dense": out["dense"]["peak_mb"],
        "probes": out["probes"]["peak_mb"],
        "ratio": out["probes"]["peak_mb"] / out["dense"]["peak_mb"],
        "after_load": {m: out[m]["after_load_mb"] for m in out},
        "method": out["dense"]["method"] + ", " + " ".join(f"{k}={v}" for k, v in RSS_ENV.items()),
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
    rss: bool = False,
) -> dict:
    """{"config", "lengths": {str(T): measure_length(...)}} for every length, in the given order; ``rss``: also the
    peak RSS of each mode at each length, in fresh processes that load ``model_name`` (:func:`measure_rss`)."""
    if not lengths or any(not isinstance(n, int) or n < 2 for n in lengths):
        raise ValueError(f"lengths must be ints >= 2, got {list(lengths)!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if not probes:
        raise ValueError("probes must name at least one probe (e.g. sink,entropy)")
    if rss and not model_name:
        raise ValueError("rss=True needs model_name: the fresh processes load the model by its name or folder")
    if threads:
        torch.set_num_threads(threads)
    tick = tick or (lambda msg: None)
    n_layers = int(getattr(model.config, "num_hidden_layers", 0))
    out = {}
    for n in lengths:
        ids = prose_ids(tok, n)
        res = measure_length(model, ids, probes, repeats, tick, state=probe_state(tok, ids, probes))
        if n_layers and res["layers_seen"] != n_layers:
            raise RuntimeError(f"the probes saw {res['layers_seen']} of {n_layers} layers at T={n}; the timing is not a scan's")
        if rss:
            tick(f"peak RSS at {n} tokens (fresh processes)")
            res["rss"] = measure_rss(model_name, n, probes, threads=torch.get_num_threads())
        out[str(n)] = res
    return {
        "config": {
            "model": model_name,
            "lengths": list(lengths),
            "repeats": repeats,
            "probes": list(probes),
            "rss": bool(rss),
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
        "| tokens | dense s | with probes s | ratio (median of pairs) | ratio range | ratio of medians | CPU-time ratio "
        "| peak RSS dense / probes MiB | RSS ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in res["lengths"].items():
        s, q = r["seconds"], r["ratio"]
        cpu = "–" if r["cpu_ratio"] is None else f"{r['cpu_ratio']['median']:.2f}x"
        m = r.get("rss")
        mem = "– | –" if m is None else f"{m['dense']:.0f} / {m['probes']:.0f} | {m['ratio']:.3f}x"
        lines.append(
            f"| {n} | {s['dense']['median']:.2f} [{s['dense']['min']:.2f}–{s['dense']['max']:.2f}] | "
            f"{s['probes']['median']:.2f} [{s['probes']['min']:.2f}–{s['probes']['max']:.2f}] | {q['median']:.2f}x | "
            f"{q['min']:.2f}–{q['max']:.2f}x | {r['ratio_of_medians']:.2f}x | {cpu} | {mem} |"
        )
    if any(r.get("rss") for r in res["lengths"].values()):
        method = next(r["rss"]["method"] for r in res["lengths"].values() if r.get("rss"))
        lines += ["", f"Peak RSS: one forward per mode in a fresh process ({method}), model weights included."]
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
