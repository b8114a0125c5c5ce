"""Streaming probes: per-(layer, query head) statistics accumulated chunk by chunk.

A probe never keeps attention maps. The engine calls, for each attention call of a layer,
either ``update(A, ctx)`` with the weights of one query chunk ``A (B, H, Tc, S)`` (rows of pad
queries are included; use ``ctx.query_valid()``), or — when every attached probe supports it —
``update_fast(stats, ctx)`` with per-query statistics computed next to SDPA:

    stats["sink"]      (B, H, T)  A[i, first real key]
    stats["prev"]      (B, H, T)  A[i, i-1]   (0 where i has no previous real key)
    stats["entropy"]   (B, H, T)  -Σ_j A_ij ln A_ij   (nats)
    stats["distance"]  (B, H, T)  Σ_j A_ij (pos_i - pos_j)

Averages are pooled over every valid query of every row and every call (a decode step adds
one query per row), so ``result()`` is (sum over queries) / (number of queries).
"""
from __future__ import annotations

import torch

from ..engine.context import AttnContext

FAST_STATS = ("sink", "prev", "entropy", "distance")


class Probe:
    name = "probe"
    #: subset of FAST_STATS this probe needs for ``update_fast``; None = no fast path
    fast_needs: tuple[str, ...] | None = None

    def __init__(self) -> None:
        self.n_layers = 0
        self.n_heads = 0
        self.total: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def supports_fast(self, causal: bool) -> bool:
        """Whether ``update_fast`` gives this probe's exact value for this kind of attention."""
        return self.fast_needs is not None

    def reset(self, n_layers: int, n_heads: int) -> None:
        self.n_layers, self.n_heads = n_layers, n_heads
        self.total = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.count = torch.zeros(n_layers, n_heads, dtype=torch.float64)

    def _ensure(self, ctx: AttnContext) -> None:
        if self.total is None or self.total.shape != (ctx.n_layers, ctx.n_heads):
            self.reset(ctx.n_layers, ctx.n_heads)

    def add(self, ctx: AttnContext, per_query: torch.Tensor, valid: torch.Tensor) -> None:
        """Accumulate ``per_query (B, H, Tq)`` over queries where ``valid (B, Tq)`` is True."""
        self._ensure(ctx)
        w = valid.to(torch.float64).unsqueeze(1)  # (B, 1, Tq)
        vals = torch.where(w > 0, per_query.to(torch.float64), 0.0)  # pads may hold NaN; valid NaNs show
        self.total[ctx.layer] += vals.sum(dim=(0, 2))
        self.count[ctx.layer] += w.sum(dim=(0, 2)).expand(ctx.n_heads)

    def update(self, a: torch.Tensor, ctx: AttnContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def update_fast(self, stats: dict[str, torch.Tensor], ctx: AttnContext) -> None:  # pragma: no cover
        raise NotImplementedError

    def result(self) -> torch.Tensor:
        """(layers, heads) float32 mean; NaN where nothing was seen."""
        if self.total is None:
            raise RuntimeError(f"probe {self.name!r} has seen no attention call")
        return (self.total / self.count).to(torch.float32)
