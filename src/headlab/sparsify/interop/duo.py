"""DuoAttention's published head patterns (Xiao et al., arXiv 2410.10819; github.com/mit-han-lab/duo-attention,
``attn_patterns/MODEL/...``) to and from headlab plans.

The format: a folder with ``full_attention_heads.tsv`` — one row per layer, one tab-separated column per KV head,
each the trained gate alpha in [0, 1] (clipped) of how much the head needs full attention — and ``config.json``
with ``sink_size`` and ``recent_size``, the streaming heads' sink and window. DuoAttention turns the gates into
full/streaming heads at a *sparsity* s (the share of streaming heads): threshold = the s-quantile of the alphas
(numpy's linear interpolation), a head is full when alpha >= threshold (s >= 1: none; s <= 0: all). Its code adds
uniform noise in [0, 1e-6) to break ties; here ties stay full (deterministic). A ``.npy`` array or a bare ``.tsv``
works too (then give sink and recent).

    plan = plan_from_duo("attn_patterns/Llama-3-8B/...", model, sparsity=0.5)
    write_duo_pattern(load_plan("duo-0.35-4096.json"), "out/duo-pattern")    # the way back (gates = plan scores)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...patterns.headplan import model_info, plan_from_entries

TSV = "full_attention_heads.tsv"


def read_duo_pattern(path, sink: int | None = None, recent: int | None = None) -> tuple[np.ndarray, int, int]:
    """(alphas (n_layers, n_heads) clipped to [0, 1], sink_size, recent_size) of a pattern folder, TSV or NPY."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    f = p / TSV if p.is_dir() else p
    if not f.is_file():
        raise ValueError(f"no DuoAttention pattern at {str(p)!r}: expected a folder with {TSV}, a .tsv or a .npy file")
    if f.suffix == ".npy":
        a = np.load(f, allow_pickle=False).astype(np.float64)
    else:
        a = np.loadtxt(f, dtype=np.float64, delimiter="\t", ndmin=2)
    if a.ndim != 2 or a.size == 0 or not np.isfinite(a).all():
        raise ValueError(f"{f}: expected a finite 2-D array (layers x heads), got shape {a.shape}")
    cfg = folder / "config.json"
    if (sink is None or recent is None) and cfg.is_file():
        c = json.loads(cfg.read_text(encoding="utf-8"))
        sink = c.get("sink_size") if sink is None else sink
        recent = c.get("recent_size") if recent is None else recent
    if sink is None or recent is None:
        raise ValueError(f"{f}: no config.json with sink_size and recent_size beside it; give sink and recent")
    for name, v in (("sink", sink), ("recent", recent)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} size must be an integer >= 0, got {v!r}")
    if sink + recent < 1:
        raise ValueError(f"sink + recent must be >= 1 key, got {sink} + {recent}")
    return np.clip(a, 0.0, 1.0), int(sink), int(recent)


def full_heads(alphas: np.ndarray, sparsity: float | None = None, threshold: float | None = None) -> np.ndarray:
    """Bool array: which heads stay full, at a ``sparsity`` (share of streaming heads, DuoAttention's rule) or
    above a ``threshold`` on alpha (exactly one of the two)."""
    if (sparsity is None) == (threshold is None):
        raise ValueError("give exactly one of sparsity (share of streaming heads, in [0, 1]) and threshold")
    if sparsity is not None:
        if not 0 <= sparsity <= 1:
            raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
        threshold = 2.0 if sparsity >= 1 else (-1.0 if sparsity <= 0 else float(np.quantile(alphas, sparsity)))
    return alphas >= threshold


def plan_from_duo(
    path,
    model,
    sparsity: float | None = None,
    threshold: float | None = None,
    length: int | None = None,
    sink: int | None = None,
    recent: int | None = None,
    name: str | None = None,
):
    """A headlab plan from a DuoAttention pattern: full heads ``causal``, streaming heads ``sink_window(sink_size,
    recent_size)``, the alphas as the plan's scores. The array must be (n_layers, n_kv_heads) of ``model`` (a
    model or its config), or (n_layers, n_heads) (then a query-head plan)."""
    alphas, s, r = read_duo_pattern(path, sink, recent)
    info = model_info(model)
    L, H, Hkv = info["n_layers"], info["n_heads"], info["n_kv_heads"]
    if alphas.shape not in ((L, Hkv), (L, H)):
        raise ValueError(
            f"the pattern's array is {alphas.shape[0]} x {alphas.shape[1]}, but the model has {L} layers x {Hkv} KV heads "
            f"({H} query heads)"
        )
    full = full_heads(alphas, sparsity, threshold)
    entries = [
        [{"pattern": "causal", "args": {}} if f else {"pattern": "sink_window", "args": {"sink": s, "size": r}} for f in row]
        for row in full.tolist()
    ]
    return plan_from_entries(
        entries,
        model,
        name=name,
        method="duo-import",
        length=length,
        granularity="kv_head" if alphas.shape[1] == Hkv else "query_head",
        calibration={"source": str(path), "format": "duo-attention", "sparsity": sparsity, "threshold": threshold},
        options={"sink": s, "window": r, "full_heads": int(full.sum())},
        scores=alphas.tolist(),
    )


def write_duo_pattern(plan, folder) -> Path:
    """``folder/full_attention_heads.tsv`` + ``config.json`` of a plan whose streaming heads all share one
    ``sink_window(sink, size)``: the plan's scores as the alphas (1/0 for full/streaming heads when it has none),
    so DuoAttention's loaders (and kvpress's ``DuoAttentionPress``) read it."""
    from ...io import atomic_write_json, atomic_write_text

    spans = {(e["args"]["sink"], e["args"]["size"]) for row in plan.entries for e in row if e["pattern"] == "sink_window"}
    others = {e["pattern"] for row in plan.entries for e in row} - {"causal", "sink_window"}
    if len(spans) > 1 or others:
        raise ValueError(
            f"DuoAttention's format has one sink and window for every streaming head; this plan has {sorted(spans)} "
            f"and other patterns {sorted(others)}"
        )
    sink, recent = spans.pop() if spans else (0, 0)
    scores = plan.meta.get("scores")
    full = [[1.0 if e["pattern"] == "causal" else 0.0 for e in row] for row in plan.entries]
    a = np.array(scores if scores is not None else full, dtype=np.float64)
    a = np.where(np.isnan(a), np.array(full), a) if scores is not None else a
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / TSV, "\n".join("\t".join(f"{v:.6f}" for v in row) for row in a.tolist()) + "\n")
    atomic_write_json(out / "config.json", {"sink_size": int(sink), "recent_size": int(recent), "source": "headlab"})
    return out
