"""A synthetic scan folder with recognisable attention patterns, for tests and demos of the report.

No model is needed: each head gets a hand-made causal attention map (sink, previous-token,
local window or broad), the maps are fed chunk by chunk through ``HeadMapProbe`` exactly as the
engine would, and heads.json / meta.json (/ baseline.json) are written with plausible metrics.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine.context import AttnContext
from ..io import atomic_write_json
from ..probes.head_map import HeadMapProbe
from .maps import TextMaps

KINDS = ("sink", "previous-token", "local", "broad")


def synthetic_attention(n_heads: int, n: int, layer: int = 0) -> torch.Tensor:
    """(1, H, N, N) causal attention; head h follows pattern KINDS[(h + layer) % 4]."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    causal = j <= i
    maps = []
    for h in range(n_heads):
        kind = KINDS[(h + layer) % len(KINDS)]
        if kind == "sink":
            s = torch.where(j == 0, 4.0, 0.0)
        elif kind == "previous-token":
            s = torch.where(j == i - 1, 5.0, 0.0)
        elif kind == "local":
            s = -0.7 * (i - j).abs().float()
        else:
            s = torch.zeros(n, n)
        s = s.masked_fill(~causal, float("-inf"))
        maps.append(torch.softmax(s, dim=-1))
    return torch.stack(maps)[None]


def feed(probe: HeadMapProbe, a: torch.Tensor, layer: int, n_layers: int, chunk: int = 16) -> None:
    """Give ``a (1, H, N, N)`` to ``probe`` in query chunks with an engine-like context."""
    _, H, n, _ = a.shape
    pos = torch.arange(n)[None]
    ctx = AttnContext(layer, n_layers, H, H, True, pos, pos)
    for t0 in range(0, n, chunk):
        ctx.q_index = torch.arange(t0, min(n, t0 + chunk))
        probe.update(a[:, :, ctx.q_index], ctx)


def write_synthetic_scan(
    folder: str | Path, tokens: list[str], *, n_layers: int = 4, n_heads: int = 6, baseline: bool = True, model: str = "synthetic"
) -> TextMaps:
    """Write heads.json, meta.json (and baseline.json) to ``folder``; return the maps of ``tokens``."""
    folder = Path(folder)
    n = len(tokens)
    detail = HeadMapProbe("all", px=64, topk=5, name="detail")
    detail.reset(n_layers, n_heads)
    heads, base = [], []
    for layer in range(n_layers):
        a = synthetic_attention(n_heads, n, layer)
        feed(detail, a, layer, n_layers)
        A = a[0].double()
        ent = -(A * A.clamp_min(1e-30).log()).sum(-1).mean(-1)
        dist = (A * (torch.arange(n)[:, None] - torch.arange(n)[None, :]).clamp_min(0).double()).sum(-1).mean(-1)
        prev = torch.stack([A[:, i, i - 1] for i in range(1, n)], -1).mean(-1) if n > 1 else torch.zeros(n_heads)
        for h in range(n_heads):
            kind = KINDS[(h + layer) % len(KINDS)]
            rec = {
                "layer": layer,
                "head": h,
                "sink": float(A[h, :, 0].mean()),
                "entropy": float(ent[h]),
                "prev_token": float(prev[h]),
                "distance": float(dist[h]),
                "induction": None,
                "roles": [kind],
            }
            heads.append(rec)
            b = dict(rec, sink=rec["sink"] * 0.5 if kind == "sink" else rec["sink"], roles=[kind] if kind != "sink" else [])
            base.append(b)
    meta = {
        "model": model,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": max(1, n_heads // 3),
        "headlab_version": "test",
        "command": "headlab scan --model synthetic --html",
        "texts": [{"name": "sample", "n_tokens": n}],
        "metrics": ["sink", "entropy", "prev_token", "distance", "induction"],
        "formulas": {
            "sink": "mean_i A[i, 0]",
            "entropy": "mean_i -sum_j A_ij ln A_ij",
            "prev_token": "mean_i A[i, i-1]",
            "distance": "mean_i sum_j A_ij (i - j)",
            "induction": "not measured",
        },
        "roles": {"sink": "sink > 0.5", "previous-token": "prev_token > 0.5"},
        "edits": ["scale(L0H0, 0.5)"] if baseline else [],
        "pattern": None,
    }
    atomic_write_json(folder / "heads.json", heads)
    atomic_write_json(folder / "meta.json", meta)
    if baseline:
        atomic_write_json(folder / "baseline.json", base)
    elif (folder / "baseline.json").exists():
        (folder / "baseline.json").unlink()
    return TextMaps("sample", list(tokens), detail=detail.maps())
