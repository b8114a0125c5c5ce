"""``headlab bench kernels``: block-sparse kernels vs dense causal SDPA, measured side by side.

For each pattern at T tokens (default 8192, 9 query / 3 KV heads, d=64, fp32) it prints density
(causal pairs kept), theoretical speedup (1 / density), achieved speedup (dense SDPA time / kernel
time, both from the same run, interleaved, best of ``repeats``) and the achieved fraction of the
theoretical one. Plan building (the block mask) and FlexAttention compile time are reported
separately: both are one-off costs cached per pattern and length.
Set OMP_WAIT_POLICY=PASSIVE before torch starts (scripts/bench_kernels.py does).
"""
from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass

import torch

from .inputs import random_qkv
import torch.nn.functional as F

from .. import patterns as P
from ..kernels import build_plan, sparse_attend
from ..kernels import auto_backend, pattern_block


def default_patterns() -> list[tuple[str, P.Pattern]]:
    return [
        ("window(256)", P.window(256)),
        ("sink_window(64, 256)", P.sink_window(64, 256)),
        ("neighborhood(256, causal)", P.neighborhood(256, 1, causal=True)),
        ("neighborhood(256, dil 2, causal)", P.neighborhood(256, 2, causal=True)),
        ("halo(256, 128, causal)", P.halo(256, 128, causal=True)),
        ("power(64, 4, 1)", P.power(64, 4, 1)),
        ("strided(64, 4, 3) per KV head", P.strided(64, 4, 3, n_heads=3)),
        ("moa 3 KV-head spans", P.moa([(256, 0.0), (128, 0.0625), (64, 0.125)], sink=64, kv_per_head=True)),
        ("per-head windows 128..512", P.per_head([P.window(128 * (1 + h % 4)) for h in range(9)])),
        ("topk_blocks(64, k=4) dynamic", P.topk_blocks(64, 4, sink_blocks=1, local_blocks=2)),
        ("dhsa(topk 512) dynamic", P.dhsa(block=64, topk_tokens=512, local_tokens=128, global_tokens=64)),
    ]


@dataclass
class KernelRow:
    name: str
    backend: str
    density: float
    theoretical: float
    seconds: float
    achieved: float
    plan_s: float
    cpu_s: float = math.nan        # process CPU time of the kernel (both threads)
    cpu_achieved: float = math.nan  # dense CPU time / kernel CPU time: the work ratio, robust to a busy machine
    max_err: float | None = None

    @property
    def fraction(self) -> float:
        return self.achieved / self.theoretical


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _interleaved(dense, fn, repeats: int):
    """Best-of-``repeats`` (wall, cpu) for dense and fn, alternating calls so both see the same load."""
    dw = dc = sw = sc = math.inf
    for _ in range(repeats):
        w, c = _timed(dense)
        dw, dc = min(dw, w), min(dc, c)
        w, c = _timed(fn)
        sw, sc = min(sw, w), min(sc, c)
    return dw, dc, sw, sc


def measured_density(p, q, k, T: int) -> float:
    """Causal density; for dynamic patterns counted from their selection on this q, k (batch 0)."""
    if not p.dynamic:
        return p.density(T, T)
    sel = p.select_units(q, k, torch.arange(T), torch.arange(T))
    per_row = torch.zeros(T, dtype=torch.float64)
    for b in range(sel.idx.shape[2]):
        rows = torch.arange(b * sel.block, min(T, (b + 1) * sel.block))
        kp = (sel.idx[0, :, b].unsqueeze(-1) * sel.unit + torch.arange(sel.unit)).flatten(1)   # (h, K*unit)
        ok = sel.valid[0, :, b].repeat_interleave(sel.unit, -1)
        per_row[rows] = ((kp.unsqueeze(1) <= rows.view(1, -1, 1)) & ok.unsqueeze(1)).sum(-1).double().mean(0)
    if sel.dense_rows:  # the last rows attend densely instead
        per_row[T - sel.dense_rows:] = torch.arange(T - sel.dense_rows, T, dtype=torch.float64) + 1
    kept = float(per_row.sum())
    return kept / (T * (T + 1) / 2)


def run(T: int = 8192, H: int = 9, Hkv: int = 3, d: int = 64, repeats: int = 3, flex: bool = True,
        patterns=None, check: bool = True, threads: int | None = None, log=print) -> dict:
    if threads:
        torch.set_num_threads(threads)
    q, k, v = random_qkv(T, H, Hkv, d)
    kr, vr = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
    dense = lambda: F.scaled_dot_product_attention(q, kr, vr, is_causal=True)  # noqa: E731
    dense()
    rows: list[KernelRow] = []
    dense_times = []
    for name, p in (patterns or default_patterns()):
        t0 = time.perf_counter()
        if not p.dynamic:
            build_plan(p, T, T, H, Hkv, pattern_block(p), True)
        plan_s = time.perf_counter() - t0
        fn = lambda p=p: sparse_attend(q, k, v, p, backend="auto")  # noqa: E731
        fn()
        td, dc, ts, sc = _interleaved(dense, fn, repeats)
        dense_times.append(td)
        dens = measured_density(p, q, k, T)
        err = None
        if check and T <= 2048:
            from ..kernels import reference_sparse_attend
            err = float((fn() - reference_sparse_attend(q, k, v, p)).abs().max())
        row = KernelRow(name, auto_backend(p, T, T, H, Hkv), dens, 1 / dens, ts, td / ts, plan_s, sc, dc / sc, err)
        rows.append(row)
        log(f"{name:34s} {row.backend:6s} density {dens:6.3f}  theory {row.theoretical:6.2f}x  kernel {ts:7.3f}s  dense {td:7.3f}s  "
            f"achieved {row.achieved:6.2f}x ({row.fraction:5.1%})  cpu-time ratio {row.cpu_achieved:6.2f}x  plan {plan_s:5.2f}s")
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
            td, _, ts, _ = _interleaved(dense, lambda p=p: sparse_attend(q, k, v, p, backend="flex"), repeats)
            dens = p.density(T, T)
            flex_rows.append(dict(name=name, density=dens, seconds=ts, dense=td, achieved=td / ts,
                                  theoretical=1 / dens, first_call_s=first))
            log(f"flex {name:29s} density {dens:6.3f}  kernel {ts:7.3f}s  dense {td:7.3f}s  achieved {td / ts:6.2f}x  "
                f"first call (compile + block mask) {first:5.1f}s")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return dict(load=load, T=T, H=H, Hkv=Hkv, d=d, threads=torch.get_num_threads(), torch=torch.__version__,
                machine=platform.machine(), omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", ""),
                dense_s=min(dense_times) if dense_times else None, rows=rows, flex=flex_rows)


def markdown(res: dict, command: str) -> str:
    lines = [
        "# Block-sparse kernels vs dense causal SDPA",
        "",
        f"Command: `{command}`",
        "",
        f"T={res['T']} tokens, {res['H']} query / {res['Hkv']} KV heads, d={res['d']}, fp32, batch 1, "
        f"{res['threads']} threads, torch {res['torch']}, OMP_WAIT_POLICY={res['omp_wait_policy'] or 'unset'}. "
        "Dense = `scaled_dot_product_attention(is_causal=True)` with K/V pre-expanded to all heads "
        "(expansion not timed). Each ratio compares kernel and dense timings taken interleaved in the same "
        "run (best of the repeats). Density = fraction of causal (i, j) pairs kept; theoretical speedup = "
        "1/density; plan = one-off block-plan build (cached per pattern and length, like FlexAttention's "
        "block mask). Dynamic patterns pay their selection inside the timed call. CPU-time ratio = dense "
        "process CPU time / kernel process CPU time (same calls): the work ratio, which a busy shared "
        f"machine distorts less than wall time. Load average when the run ended: {res.get('load', '?')}.",
        "",
        "| pattern | backend | density | theoretical | kernel s | dense s | achieved (wall) | fraction of theory | "
        "CPU-time ratio | plan s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(f"| {r.name} | {r.backend} | {r.density:.3f} | {r.theoretical:.2f}x | {r.seconds:.3f} | "
                     f"{r.seconds * r.achieved:.3f} | {r.achieved:.2f}x | {r.fraction:.0%} | {r.cpu_achieved:.2f}x | "
                     f"{r.plan_s:.2f} |")
    if res["flex"]:
        lines += ["", "FlexAttention (torch.compile, CPU); first call includes compilation and the block mask:", "",
                  "| pattern | density | kernel s | dense s | achieved | first call s |", "|---|---|---|---|---|---|"]
        for f in res["flex"]:
            lines.append(f"| {f['name']} | {f['density']:.3f} | {f['seconds']:.3f} | {f['dense']:.3f} | "
                         f"{f['achieved']:.2f}x | {f['first_call_s']:.1f} |")
    return "\n".join(lines) + "\n"
