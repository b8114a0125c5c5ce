"""``headlab bench neighborhood``: neighbourhood attention through the fused block-sparse kernel against a naive
(unfused) implementation, timed side by side — the speed claim of Hassani et al., "Faster Neighborhood Attention:
Reducing the O(n^2) Cost of Self Attention at the Threadblock Level" (NeurIPS 2024, arXiv 2403.04690; NATTEN; the
attention pattern is from "Neighborhood Attention Transformer", arXiv 2204.07143), in our setting (CPU, fp32).

- naive (:func:`naive_na`): what NATTEN's naive kernels do, one unfused step after another: for every query gather
  its k neighbours' keys (:func:`neighbor_index_1d` / :func:`neighbor_index_2d`, NATTEN's rule: the window shifts
  at the borders, every query sees exactly k keys), the scores q·k (B, H, T, k) materialised, a softmax, then the
  same gather of the values and the weighted sum.  Queries go in chunks so the gathered copies stay bounded;
- fused: ``sparse_attend(q, k, v, neighborhood(...), causal=False, backend="gather")``
  (:mod:`headlab.kernels.gather`): per 64-query block only the key blocks the pattern names are copied and one
  dense softmax-attention runs on them (scores stay block-sized, nothing per query is gathered).  The block plan is
  built by the untimed warm-up call (cached on the pattern, as FlexAttention builds its block mask once); its build
  time is recorded.

With ``halo`` = (block, halo), every 2D case also times HaloNet's blocked implementation
(:func:`headlab.bench.halo.halo_blocked`, arXiv 2103.12731: block x block query tiles sharing one window of
(block + 2 halo)² keys) in the same rounds: the per-round ratio naive / halo.  Its attention is not the
neighbourhood's (tiles share keys), so no output difference is recorded; its keys per query are.

Protocol (:mod:`headlab.timing`): per case one untimed warm-up call of each (the outputs of naive and fused
compared: max |diff|), then ``repeats`` alternating rounds; medians, ranges and the per-round ratio naive / fused.  Cases: 1D at every
``lengths`` with ``kernel`` (dilation 1), 2D on square grids of side ``grids`` with ``kernel2d`` x ``kernel2d``;
q, k, v seeded standard normal (1, ``heads``, T, ``dim``), non-causal.

Shapes: q, k, v (B, H, T, d); neighbour index (T, k) long.
"""

from __future__ import annotations

import os
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from ..kernels import sparse_attend
from ..patterns.neighborhood import neighborhood, neighborhood2d
from ..timing import alternate, load_text, machine, spread, versions
from .halo import halo_blocked
from .paired import write_run

FORMAT = "headlab-bench-neighborhood/1"
IMPLS = ("naive", "fused")
#: the paper's abstract: average latency improvement of the fused kernels over the naive ones (GPU)
PAPER_FUSED_OVER_NAIVE = {"1d": 17.07, "2d": 6.81}
CHUNK_ELEMS = 1 << 22  # gathered key entries per query chunk of the naive path (16 MB fp32)


def _axis_index(n: int, kernel: int, dilation: int) -> torch.Tensor:
    """(n, kernel) key positions of every position on one axis: NATTEN's non-causal rule with dilation."""
    if kernel < 1 or dilation < 1 or kernel * dilation > n:
        raise ValueError(
            f"need kernel >= 1, dilation >= 1 and kernel*dilation <= n={n}; got kernel={kernel}, dilation={dilation}"
        )
    i = torch.arange(n)
    r, ii = i % dilation, i // dilation
    n_r = (n - r + dilation - 1) // dilation  # positions in each residue group
    wl, wr = kernel // 2, kernel // 2 + (kernel % 2 - 1)
    c = torch.minimum(ii.clamp_min(wl), n_r - 1 - wr)
    jj = (c - wl)[:, None] + torch.arange(kernel)[None]  # (n, kernel) group coordinates
    return jj * dilation + r[:, None]


def neighbor_index_1d(n: int, kernel: int, dilation: int = 1) -> torch.Tensor:
    """(n, kernel) long: the keys each of n positions attends in 1D neighbourhood attention."""
    return _axis_index(n, kernel, dilation)


def neighbor_index_2d(height: int, width: int, kernel: int, dilation: int = 1) -> torch.Tensor:
    """(height*width, kernel²) long over a row-major grid: the product of the row and column neighbourhoods."""
    rows, cols = _axis_index(height, kernel, dilation), _axis_index(width, kernel, dilation)  # (h, k), (w, k)
    idx = rows[:, None, :, None] * width + cols[None, :, None, :]  # (h, w, k, k)
    return idx.reshape(height * width, kernel * kernel)


def naive_na(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Unfused neighbourhood attention: gathered keys, materialised (B, H, T, K) weights, softmax, gathered values.
    q, k, v (B, H, T, d), index (T, K) -> (B, H, T, d)."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"need q, k (B,H,T,d) and v (B,H,T,dv) alike; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, h, t, d = q.shape
    if index.dim() != 2 or index.shape[0] != t:
        raise ValueError(f"index must be (T={t}, K), got {tuple(index.shape)}")
    kk = index.shape[1]
    sc = d**-0.5 if scale is None else float(scale)
    rows = max(1, CHUNK_ELEMS // max(1, b * h * kk * d))
    w = q.new_empty(b, h, t, kk)
    for s in range(0, t, rows):  # QK: one gathered key set per query
        idx = index[s : s + rows]
        w[:, :, s : s + rows] = torch.einsum("bhtd,bhtkd->bhtk", q[:, :, s : s + rows], k[:, :, idx]) * sc
    w = w.softmax(-1)
    out = q.new_empty(b, h, t, v.shape[-1])
    for s in range(0, t, rows):  # AV: the same gather of the values
        idx = index[s : s + rows]
        out[:, :, s : s + rows] = torch.einsum("bhtk,bhtkd->bhtd", w[:, :, s : s + rows], v[:, :, idx])
    return out


def cases(lengths: list[int], kernel: int, grids: list[int], kernel2d: int) -> list[dict]:
    """The benchmark's cases: {"name", "dims", "tokens", "pattern", "index"} for 1D lengths then 2D grids."""
    out = []
    for n in lengths:
        out.append(
            {"name": f"1d@{n}", "dims": 1, "tokens": n, "pattern": neighborhood(kernel), "index": neighbor_index_1d(n, kernel)}
        )
    for g in grids:
        out.append(
            {
                "name": f"2d@{g}x{g}",
                "dims": 2,
                "tokens": g * g,
                "pattern": neighborhood2d(g, g, kernel2d),
                "index": neighbor_index_2d(g, g, kernel2d),
            }
        )
    return out


def _fused(q, k, v, pattern):
    return sparse_attend(q, k, v, pattern, causal=False, backend="gather")


def run(
    lengths: list[int],
    kernel: int,
    grids: list[int],
    kernel2d: int,
    repeats: int,
    threads: int,
    heads: int = 4,
    dim: int = 32,
    halo: tuple[int, int] | None = None,
    log=print,
) -> dict:
    """Time naive vs fused neighbourhood attention at every case (and HaloNet's blocked attention in 2D when
    ``halo`` = (block, halo)); every sample is kept."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not lengths and not grids:
        raise ValueError("give at least one 1D length or one 2D grid")
    if heads < 1 or dim < 1:
        raise ValueError(f"heads and dim must be >= 1, got heads={heads}, dim={dim}")
    for n in lengths:
        if n < kernel:
            raise ValueError(f"1D length {n} is shorter than the kernel {kernel}")
    for g in grids:
        if g < kernel2d:
            raise ValueError(f"2D grid side {g} is smaller than the kernel {kernel2d}")
        if halo is not None and (halo[0] < 1 or halo[1] < 0 or g % halo[0]):
            raise ValueError(f"halo block {halo[0]} must be >= 1 and divide the grid side {g}; halo {halo[1]} >= 0")
    if threads:
        torch.set_num_threads(threads)
    t_start = time.perf_counter()
    out: dict = {}
    with torch.no_grad():
        for case in cases(lengths, kernel, grids, kernel2d):
            n = case["tokens"]
            g = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(1, heads, n, dim, generator=g) for _ in range(3))
            t0 = time.perf_counter()
            fused_out = _fused(q, k, v, case["pattern"])  # builds and caches the block plan
            first_fused = time.perf_counter() - t0
            naive_out = naive_na(q, k, v, case["index"])
            max_diff = float((fused_out - naive_out).abs().max())
            calls = {"naive": partial(naive_na, q, k, v, case["index"]), "fused": partial(_fused, q, k, v, case["pattern"])}
            with_halo = halo is not None and case["dims"] == 2
            if with_halo:
                side = int(round(n**0.5))
                calls["halo"] = partial(halo_blocked, q, k, v, side, side, *halo)
                calls["halo"]()  # warm-up
            t = alternate(calls, repeats, warmup=0)  # warmed up above
            ratios = t.ratios("naive", "fused")
            samples = [
                {"case": case["name"], "repeat": r, "impl": i, "seconds": t.wall[i][r], "cpu_seconds": t.cpu[i][r]}
                for r, i in t.runs
            ]
            out[case["name"]] = {
                "dims": case["dims"],
                "tokens": n,
                "keys_per_query": int(case["index"].shape[1]),
                "seconds": {i: t.spread(i) for i in IMPLS},
                "cpu_seconds": {i: spread(t.cpu[i]) for i in IMPLS},
                "ratio": spread(ratios),
                "pair_ratios": ratios,
                "first_fused_call_seconds": first_fused,
                "max_abs_diff": max_diff,
                "samples": samples,
            }
            if with_halo and halo is not None:
                out[case["name"]]["halo"] = {
                    "block": halo[0],
                    "halo": halo[1],
                    "keys_per_query": (halo[0] + 2 * halo[1]) ** 2,
                    "seconds": t.spread("halo"),
                    "ratio": spread(t.ratios("naive", "halo")),
                    "pair_ratios": t.ratios("naive", "halo"),
                }
                log(
                    f"{case['name']}: HaloNet blocked {t.median('halo'):.4f} s, naive / halo {out[case['name']]['halo']['ratio']['median']:.2f}x"
                )
            log(
                f"{case['name']}: naive {t.median('naive'):.4f} s, fused {t.median('fused'):.4f} s, "
                f"naive / fused {statistics.median(ratios):.2f}x; max |diff| {max_diff:.2g}"
            )
    return {
        "format": FORMAT,
        "config": {
            "lengths": list(lengths),
            "kernel": kernel,
            "grids": list(grids),
            "kernel2d": kernel2d,
            "repeats": repeats,
            "threads": threads,
            "heads": heads,
            "dim": dim,
            "halo": list(halo) if halo is not None else [],
            "dtype": "float32",
            "causal": False,
        },
        "paper_fused_over_naive": PAPER_FUSED_OVER_NAIVE,
        "versions": versions(),
        "machine": machine(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "load": load_text(),
        "lengths": out,
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def table(res: dict) -> str:
    c = res["config"]
    lines = [
        f"Neighbourhood attention on CPU, {c['heads']} heads, d = {c['dim']}, fp32, non-causal, {c['threads']} threads "
        f"(0 = torch's default); 1D kernel {c['kernel']}, 2D kernel {c['kernel2d']}x{c['kernel2d']}; "
        f"{c['repeats']} alternating rounds; load average at the end {res['load']}.",
        "",
        "| case | tokens | keys / query | naive s | fused s | naive / fused | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in res["lengths"].items():
        s, q = r["seconds"], r["ratio"]
        lines.append(
            f"| {name} | {r['tokens']} | {r['keys_per_query']} | {s['naive']['median']:.4f} ({s['naive']['min']:.4f}–"
            f"{s['naive']['max']:.4f}) | {s['fused']['median']:.4f} ({s['fused']['min']:.4f}–{s['fused']['max']:.4f}) | "
            f"{q['median']:.2f}x ({q['min']:.2f}–{q['max']:.2f}) | {r['max_abs_diff']:.2g} |"
        )
    halos = {n: r["halo"] for n, r in res["lengths"].items() if "halo" in r}
    if halos:
        lines += ["", "| case | HaloNet blocked: block, halo | keys / query | halo s | naive / halo |", "|---|---|---|---|---|"]
        for name, hr in halos.items():
            s, q = hr["seconds"], hr["ratio"]
            lines.append(
                f"| {name} | {hr['block']}, {hr['halo']} | {hr['keys_per_query']} | {s['median']:.4f} ({s['min']:.4f}–"
                f"{s['max']:.4f}) | {q['median']:.2f}x ({q['min']:.2f}–{q['max']:.2f}) |"
            )
    lines += [
        "",
        f"The paper (GPU, average over problem sizes): fused / naive speed-up {PAPER_FUSED_OVER_NAIVE['1d']}x in 1D, "
        f"{PAPER_FUSED_OVER_NAIVE['2d']}x in 2D.",
    ]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["lengths"])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, impl in enumerate(IMPLS):
        med = [res["lengths"][n]["seconds"][impl]["median"] for n in names]
        lo = [m - res["lengths"][n]["seconds"][impl]["min"] for m, n in zip(med, names)]
        hi = [res["lengths"][n]["seconds"][impl]["max"] - m for m, n in zip(med, names)]
        ax.bar([j + 0.4 * i for j in range(len(names))], med, width=0.4, yerr=[lo, hi], label=impl)
    ax.set_xticks([j + 0.2 for j in range(len(names))], names)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per call (median, range)")
    ax.set_title("neighbourhood attention: naive vs fused block-sparse (CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(res: dict, out: str | Path, command: str) -> Path:
    """``out``: neighborhood.json (config, summaries, every sample), neighborhood.records.jsonl, table.md, .png."""
    return write_run(res, out, command, "neighborhood", table, plot)
