"""Global attention sinks (GAS) per layer, and each head's share of attention to them.

RefAM (Kukleva et al., "RefAM: Attention Magnets for Zero-Shot Referral Segmentation", arXiv
2509.22650) finds tokens that draw high attention from nearly every query in deeper layers ("global
attention sinks"). The paper gives no detection rule; headlab uses this one, per layer and per text
(row of one forward call):

    key j is a global sink  ⇔  A^h[i, j] ≥ τ for at least a fraction ρ of all (head h, valid query i) pairs

(τ = 0.1, ρ = 0.5 by default; queries that cannot see j count as not high, so a sink must be seen by
most of the text). The head metric ``global_sink`` is the attention share on the layer's sinks,

    global_sink = mean_i Σ_{j ∈ G} A[i, j]

pooled over queries like the other metrics (0 in layers without a global sink). The initial token is
a candidate like any other: ``global_sink`` − ``sink`` is roughly the mass on the other sinks.
``sinks()`` tells which positions were found in which layer.

Streaming: per forward call the probe keeps, per row, the number of high (head, query) pairs per key
(B, S) and the column sums Σ_i A[i, j] per head (B, H, S); the share follows after the last chunk.
"""

from __future__ import annotations

from collections import Counter

import torch

from ..engine.context import AttnContext
from .base import Probe, acc_dtype
from .fai import last_chunk


class GlobalSinkProbe(Probe):
    name = "global_sink"
    formula = (
        "mean over queries i of sum_{j in G} A[i, j]; G (per layer and text): keys j with A[i, j] >= 0.1 "
        "in >= 50% of all (head, query) pairs"
    )
    paper = 'Kukleva et al., "RefAM: Attention Magnets for Zero-Shot Referral Segmentation", arXiv 2509.22650'
    role = None  # the detection rule is headlab's; no head threshold from the paper

    def __init__(self, tau: float = 0.1, rho: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < float(tau) <= 1.0:
            raise ValueError(f"tau (attention weight that counts as high) must be in (0, 1], got {tau}")
        if not 0.0 < float(rho) <= 1.0:
            raise ValueError(f"rho (fraction of (head, query) pairs) must be in (0, 1], got {rho}")
        self.tau, self.rho = float(tau), float(rho)
        self._pending: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.found: dict[int, Counter] = {}
        self.calls: dict[int, int] = {}

    def reset(self, n_layers: int, n_heads: int) -> None:
        super().reset(n_layers, n_heads)
        self._pending = {}
        self.found = {layer: Counter() for layer in range(n_layers)}
        self.calls = {layer: 0 for layer in range(n_layers)}

    def update(self, a: torch.Tensor, ctx: AttnContext) -> None:
        # a (B, H, Tc, S)
        self._ensure(ctx)
        dt = acc_dtype(a.device)
        qv = ctx.query_valid()  # (B, Tc)
        q = qv.to(a.dtype)
        high = torch.einsum("bts,bt->bs", (a >= self.tau).sum(1, dtype=a.dtype), q).to(dt)  # (B, S) high pairs
        col = torch.einsum("bhts,bt->bhs", a, q)  # (B, H, S)
        if not bool(torch.isfinite(col).all()):  # NaN in a pad query row
            col = torch.einsum("bhts,bt->bhs", torch.where(qv[:, None, :, None], a, 0.0), q)
        col = col.to(dt)
        nq = qv.to(dt).sum(-1)  # (B,)
        key = (ctx.layer, id(ctx))
        if key in self._pending:
            h0, c0, n0 = self._pending[key]
            high, col, nq = h0 + high, c0 + col, n0 + nq
        if not last_chunk(ctx):
            self._pending[key] = (high, col, nq)
            return
        self._pending.pop(key, None)
        g = self.detect(high, nq, ctx)  # (B, S)
        share = (col * g[:, None].to(dt)).sum(-1)  # (B, H): Σ_i Σ_{j∈G} A[i, j]
        self.add_row(ctx.layer, share.sum(0), nq.sum().expand(ctx.n_heads))
        self.calls[ctx.layer] = self.calls.get(ctx.layer, 0) + int((nq > 0).sum())
        pos = ctx.key_pos[g].tolist()
        self.found.setdefault(ctx.layer, Counter()).update(int(p) for p in pos)

    def detect(self, high: torch.Tensor, nq: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        """(B, S) bool global sinks from the high-pair counts (B, S) and valid query counts (B,)."""
        pairs = (nq * ctx.n_heads).clamp(min=1)[:, None]
        return (high / pairs >= self.rho) & (nq > 0)[:, None] & (ctx.key_pos >= 0)

    def sinks(self) -> dict[int, dict[int, float]]:
        """{layer: {position: fraction of the layer's texts (rows × calls) where it was a global sink}}."""
        return {
            layer: {p: n / self.calls[layer] for p, n in sorted(c.items())}
            for layer, c in self.found.items()
            if self.calls.get(layer)
        }
