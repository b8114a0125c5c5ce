"""``headlab bench kernels``: block-sparse kernels vs dense causal SDPA, measured side by side.

For each pattern at T tokens (default 8192, 9 query / 3 KV heads, d=64, fp32) it reports density
(causal pairs kept), theoretical speedup (1 / density), the backend that really ran
(``headlab.kernels.last_backend()``: "band", "band+sdpa", "gather", "flex", ...), and the achieved
speedup (dense SDPA time / kernel time). Every row is timed in one process with the dense call and
the kernel call alternating, after an untimed warm-up of each (which is also where ``auto`` measures
its candidates), and reported as the median with the range over the repeats. Plan building (the
block mask) and FlexAttention compile time are one-off costs, reported separately.
Set OMP_WAIT_POLICY=PASSIVE before torch starts (scripts/bench_kernels.py does).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .. import patterns as P
from ..kernels import build_plan, head_bands, last_backend, pattern_block, sparse_attend
from ..timing import Timings, alternate, load_text
from .inputs import random_qkv


def default_patterns() -> list[tuple[str, P.Pattern, str]]:
    """(row name, pattern, backend) rows; backend "auto" unless a row pins one for comparison."""
    plan = P.per_head([P.causal(), P.sink_window(64, 256), P.sink_window(64, 256)], kv_per_head=True)
    return [
        ("window(256)", P.window(256), "auto"),
        ("window(256) [gather]", P.window(256), "gather"),
        ("sink_window(64, 256)", P.sink_window(64, 256), "auto"),
        ("sink_window(64, 256) [gather]", P.sink_window(64, 256), "gather"),
        ("plan: 1 of 3 KV heads causal, 2 sink_window(64, 256)", plan, "auto"),
        ("moa 3 KV-head spans", P.moa([(256, 0.0), (128, 0.0625), (64, 0.125)], sink=64, kv_per_head=True), "auto"),
        ("per-head windows 128..512", P.per_head([P.window(128 * (1 + h % 4)) for h in range(9)]), "auto"),
        ("neighborhood(256, causal)", P.neighborhood(256, 1, causal=True), "auto"),
        ("neighborhood(256, dil 2, causal)", P.neighborhood(256, 2, causal=True), "auto"),
        ("halo(256, 128, causal)", P.halo(256, 128, causal=True), "auto"),
        ("power(64, 4, 1)", P.power(64, 4, 1), "auto"),
        ("strided(64, 4, 3) per KV head", P.strided(64, 4, 3, n_heads=3), "auto"),
        ("topk_blocks(64, k=4) dynamic", P.topk_blocks(64, 4, sink_blocks=1, local_blocks=2), "auto"),
        ("dhsa(topk 512) dynamic", P.dhsa(block=64, topk_tokens=512, local_tokens=128, global_tokens=64), "auto"),
    ]


@dataclass
class KernelRow:
    name: str
    asked: str  # backend requested ("auto" or a pinned one)
    backend: str  # backend that really ran (last_backend() after the timed calls)
    density: float
    theoretical: float
    seconds: float  # kernel, median over the repeats
    dense_s: float  # dense causal SDPA, median over the same alternating repeats
    kernel_range: tuple[float, float]
    dense_range: tuple[float, float]
    plan_s: float
    cpu_achieved: float = math.nan  # dense CPU time / kernel CPU time (medians): the work ratio
    max_err: float | None = None
    samples: dict = field(default_factory=dict)

    @property
    def achieved(self) -> float:
        return self.dense_s / self.seconds

    @property
    def fraction(self) -> float:
        return self.achieved / self.theoretical


def alternating(fns: dict, repeats: int) -> Timings:
    """Dense and kernel calls alternating in one order, ``repeats`` rounds (warmed up before: :mod:`headlab.timing`)."""
    return alternate(fns, repeats, warmup=0, reverse=False)


def measured_density(p, q, k, T: int) -> float:
    """Causal density; for dynamic patterns counted from their selection on this q, k (batch 0)."""
    if not p.dynamic:
        return p.density(T, T)
    sel = p.select_units(q, k, torch.arange(T), torch.arange(T))
    per_row = torch.zeros(T, dtype=torch.float64)
    for b in range(sel.idx.shape[2]):
        rows = torch.arange(b * sel.block, min(T, (b + 1) * sel.block))
        kp = (sel.idx[0, :, b].unsqueeze(-1) * sel.unit + torch.arange(sel.unit)).flatten(1)  # (h, K*unit)
        ok = sel.valid[0, :, b].repeat_interleave(sel.unit, -1)
        per_row[rows] = ((kp.unsqueeze(1) <= rows.view(1, -1, 1)) & ok.unsqueeze(1)).sum(-1).double().mean(0)
    if sel.dense_rows:  # the last rows attend densely instead
        per_row[T - sel.dense_rows :] = torch.arange(T - sel.dense_rows, T, dtype=torch.float64) + 1
    kept = float(per_row.sum())
    return kept / (T * (T + 1) / 2)


def run(
    T: int = 8192,
    H: int = 9,
    Hkv: int = 3,
    d: int = 64,
    repeats: int = 3,
    flex: bool = True,
    patterns=None,
    check: bool = True,
    threads: int | None = None,
    log=print,
) -> dict:
    if threads:
        torch.set_num_threads(threads)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    t_start = time.perf_counter()
    q, k, v = random_qkv(T, H, Hkv, d)
    kr, vr = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
    dense = lambda: F.scaled_dot_product_attention(q, kr, vr, is_causal=True)  # noqa: E731
    dense()
    rows: list[KernelRow] = []
    for name, p, backend in patterns or default_patterns():
        t0 = time.perf_counter()
        if not p.dynamic and backend in ("auto", "gather") and (backend == "gather" or head_bands(p, H, Hkv, T) is None):
            build_plan(p, T, T, H, Hkv, pattern_block(p), True)
        plan_s = time.perf_counter() - t0
        fn = lambda p=p, b=backend: sparse_attend(q, k, v, p, backend=b)  # noqa: E731
        fn()  # warm-up (and auto's measurement), untimed
        t = alternating({"dense": dense, "kernel": fn}, repeats)
        ran = last_backend()
        dens = measured_density(p, q, k, T)
        err = None
        if check and T <= 2048:
            from ..kernels import reference_sparse_attend

            err = float((fn() - reference_sparse_attend(q, k, v, p)).abs().max())
        cpu = {n: statistics.median(t.cpu[n]) for n in t.cpu}
        row = KernelRow(
            name,
            backend,
            ran,
            dens,
            1 / dens,
            t.median("kernel"),
            t.median("dense"),
            t.range("kernel"),
            t.range("dense"),
            plan_s,
            cpu["dense"] / cpu["kernel"] if cpu["kernel"] > 0 else math.nan,
            err,
            t.as_dict(),
        )
        rows.append(row)
        log(
            f"{name:52s} {ran:9s} density {dens:6.3f}  theory {row.theoretical:6.2f}x  kernel {row.seconds:7.3f}s  "
            f"dense {row.dense_s:7.3f}s  achieved {row.achieved:6.2f}x ({row.fraction:5.1%})  "
            f"cpu-time ratio {row.cpu_achieved:6.2f}x  plan {plan_s:5.2f}s"
        )
    flex_rows = []
    if flex:
        for name, p in [("window(256)", P.window(256)), ("power(64, 4, 1)", P.power(64, 4, 1))]:
            t0 = time.perf_counter()
            try:
                sparse_attend(q, k, v, p, backend="flex")
            except Exception as exc:  # pragma: no cover - depends on the torch build
                log(f"flex {name}: unavailable ({type(exc).__name__}: {exc})")
                break
            first = time.perf_counter() - t0
            t = alternating({"dense": dense, "kernel": lambda p=p: sparse_attend(q, k, v, p, backend="flex")}, repeats)
            td, ts = t.median("dense"), t.median("kernel")
            dens = p.density(T, T)
            flex_rows.append(
                dict(
                    name=name,
                    density=dens,
                    seconds=ts,
                    dense=td,
                    achieved=td / ts,
                    kernel_range=t.range("kernel"),
                    theoretical=1 / dens,
                    first_call_s=first,
                    samples=t.as_dict(),
                )
            )
            log(
                f"flex {name:47s} density {dens:6.3f}  kernel {ts:7.3f}s  dense {td:7.3f}s  achieved {td / ts:6.2f}x  "
                f"first call (compile + block mask) {first:5.1f}s"
            )
    from ..kernels import autotune

    decisions = [
        dict(
            pattern=key[0],
            T=key[1],
            backend=dec.backend,
            medians={n: dec.median(n) for n in dec.samples},
            samples=dec.samples,
            failed=dec.failed,
        )
        for key, dec in autotune.DECISIONS.items()
    ]
    return dict(
        load=load_text(),
        T=T,
        H=H,
        Hkv=Hkv,
        d=d,
        repeats=repeats,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        machine=platform.machine(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", ""),
        rows=rows,
        flex=flex_rows,
        auto_decisions=decisions,
        seconds=time.perf_counter() - t_start,
    )


def _rng(r) -> str:
    return f"{r[0]:.3f}–{r[1]:.3f}"


def markdown(res: dict, command: str) -> str:
    lines = [
        "# Block-sparse kernels vs dense causal SDPA",
        "",
        f"Command: `{command}`",
        "",
        f"T={res['T']} tokens, {res['H']} query / {res['Hkv']} KV heads, d={res['d']}, fp32, batch 1, "
        f"{res['threads']} threads, torch {res['torch']}, OMP_WAIT_POLICY={res['omp_wait_policy'] or 'unset'}. "
        "Dense = `scaled_dot_product_attention(is_causal=True)` with K/V pre-expanded to all heads "
        "(expansion not timed). Each row: one untimed warm-up of each call, then "
        f"{res['repeats']} rounds in which dense and kernel alternate; times are medians (range in brackets). "
        "`ran` = the backend that really ran (`headlab.kernels.last_backend()`); `[gather]` rows pin the "
        "gather backend for comparison. Density = fraction of causal (i, j) pairs kept; theoretical "
        "speedup = 1/density; plan = one-off block-plan build (gather only). Dynamic patterns pay their "
        "selection inside the timed call. CPU-time ratio = dense / kernel process CPU time (medians), "
        f"which a busy shared machine distorts less than wall time. Load average at the end: {res.get('load', '?')}.",
        "",
        "| pattern | ran | density | theoretical | kernel s | dense s | achieved (wall) | fraction of theory | "
        "CPU-time ratio | plan s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r.name} | {r.backend} | {r.density:.3f} | {r.theoretical:.2f}x | {r.seconds:.3f} "
            f"({_rng(r.kernel_range)}) | {r.dense_s:.3f} ({_rng(r.dense_range)}) | {r.achieved:.2f}x | "
            f"{r.fraction:.0%} | {r.cpu_achieved:.2f}x | {r.plan_s:.2f} |"
        )
    if res["flex"]:
        lines += [
            "",
            "FlexAttention pinned (torch.compile, CPU); the first call includes compilation and the block mask:",
            "",
            "| pattern | density | kernel s | dense s | achieved | first call s |",
            "|---|---|---|---|---|---|",
        ]
        for f in res["flex"]:
            lines.append(
                f"| {f['name']} | {f['density']:.3f} | {f['seconds']:.3f} ({_rng(f['kernel_range'])}) | "
                f"{f['dense']:.3f} | {f['achieved']:.2f}x | {f['first_call_s']:.1f} |"
            )
    if res.get("auto_decisions"):
        lines += ["", "`auto`'s measured choices (warm, median of the alternating samples, seconds):", ""]
        for dd in res["auto_decisions"]:
            med = ", ".join(f"{n} {s:.3f}" for n, s in dd["medians"].items())
            lines.append(f"- {dd['pattern']} at T={dd['T']}: **{dd['backend']}** ({med})")
    return "\n".join(lines) + "\n"


def to_json(res: dict, command: str) -> dict:
    """The run as a JSON-able dict (every sample kept), with versions and machine (the harness adds the commit)."""
    from ..timing import machine, versions

    rows = []
    for r in res["rows"]:
        d = asdict(r)
        d.update(achieved=r.achieved, fraction=r.fraction)
        rows.append(d)
    return dict(
        format="headlab-bench-kernels/1",
        command=command,
        rows=rows,
        flex=res["flex"],
        auto_decisions=res["auto_decisions"],
        conditions={k: res[k] for k in ("T", "H", "Hkv", "d", "repeats", "threads", "omp_wait_policy", "load")},
        versions=versions(),
        machine=machine(),
        seconds=round(res["seconds"], 1),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def write(res: dict, out, command: str):
    """``out`` ending in .md: that one markdown file; else a folder with BENCHMARKS.md, kernels.json (raw: every sample),
    kernels.records.jsonl and kernels.png, written atomically (nothing half-written)."""
    from pathlib import Path

    from ..io import atomic_dir, atomic_write_json, atomic_write_text

    out = Path(out)
    if out.suffix == ".md":
        atomic_write_text(out, markdown(res, command))
        return out
    from .kernel_files import plot, records

    doc = to_json(res, command)
    with atomic_dir(out) as stage:
        (stage / "BENCHMARKS.md").write_text(markdown(res, command))
        atomic_write_json(stage / "kernels.json", doc)
        atomic_write_text(stage / "kernels.records.jsonl", records(doc))
        plot(doc, stage / "kernels.png")
    return out
