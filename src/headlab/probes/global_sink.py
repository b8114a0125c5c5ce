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

Fast form (no map, exact, but not cheap): A[i, j] ≥ τ ⇔ scale · q_i·k_j ≥ lse_i + ln τ, so next to SDPA
the probe counts high pairs from scores against the log-sum-exp (one matmul and a comparison per chunk:
no softmax, no A·v), queries in order, keeping only the keys that can still reach ρ of all pairs (a key
seen high by h pairs with at most R visible pairs left is dropped once h + R < ρ · heads · queries). In
a causal model no key can be dropped before a fraction 1 − ρ of the queries is seen, so the pass costs
about (1 − ρ)² / 2 of the full T × S scores (1/8 at ρ = 0.5); the share then reads the few sinks' columns.
Counting weights ≥ τ needs every pair of that part; ``global_sink`` is therefore not in the default scan.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F

from ..engine.context import AttnContext
from ..engine.fast import CHUNK, FastCall
from .base import Probe, acc_dtype
from .fai import last_chunk


class GlobalSinkProbe(Probe):
    name = "global_sink"
    fast_needs = ("scores",)
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

    def update_fast(self, stats, ctx: AttnContext) -> None:
        call: FastCall = stats["scores"]
        self._ensure(ctx)
        B, H, _, T, S = call.shape
        dev = call.q.device
        dt = acc_dtype(dev)
        qv = ctx.query_valid()  # (B, T)
        nq = qv.to(dt).sum(-1)  # (B,)
        need = self.rho * (nq * H).clamp(min=1) * (1 - 1e-9)  # (B,) high pairs a sink needs (float slack)
        thr = call.lse + math.log(self.tau)  # (B, H, T): A >= tau  <=>  score >= lse + ln tau
        high = torch.zeros(B, S, dtype=dt, device=dev)
        cq = F.pad(qv.to(dt).cumsum(-1), (1, 0))  # (B, T + 1): valid queries before each index
        off = S - T

        def left(t: int, keys: torch.Tensor) -> torch.Tensor:
            """(B, C): pairs (head, valid query >= t) that may still see each key, by causality and window."""
            lo = torch.full_like(keys, t)
            hi = torch.full_like(keys, T)
            if call.causal:
                lo = torch.maximum(lo, keys - off)
                if call.window is not None:
                    hi = torch.minimum(hi, keys - off + call.window)
            lo, hi = lo.clamp(0, T), hi.clamp(0, T)
            return H * (cq[:, torch.maximum(hi, lo)] - cq[:, lo])

        cand = torch.arange(S, device=dev)[(ctx.key_pos >= 0).any(0)]
        cand = cand[(left(0, cand) >= need[:, None]).any(0)]
        cap = max(1, math.isqrt(CHUNK // max(1, B * H)))
        t = 0
        while t < T and cand.numel():
            seen = int((cand <= off + t).sum()) if call.causal else int(cand.numel())
            step = max(1, CHUNK // max(1, B * H * max(1, seen)))
            if seen < cand.numel():
                step = min(step, cap)  # keys that appear inside the chunk: keep Tc × keys bounded
            t1 = min(T, t + step)
            keys = cand[cand <= off + t1 - 1] if call.causal else cand
            if keys.numel():
                s = call.scores(t, t1, keys)  # (B, H, Tc, C)
                ok = call.visible(t, t1, keys) & (qv[:, None, t:t1] & call.live(t, t1))[..., None]
                high[:, keys] += ((s >= thr[:, :, t:t1, None]) & ok).sum((1, 2)).to(dt)
            t = t1
            cand = cand[((high[:, cand] + left(t, cand)) >= need[:, None]).any(0)]
        g = self.detect(high, nq, ctx)  # (B, S)
        sinks = torch.arange(S, device=dev)[g.any(0)]
        share = torch.zeros(B, H, dtype=dt, device=dev)
        if sinks.numel():
            for t0, t1 in call.query_chunks(int(sinks.numel())):
                w = call.weights(t0, t1, sinks) * qv[:, None, t0:t1, None]  # (B, H, Tc, G)
                share += (w * g[:, None, None, sinks]).to(dt).sum((2, 3))
        self.add_row(ctx.layer, share.sum(0), nq.sum().expand(ctx.n_heads))
        self.calls[ctx.layer] = self.calls.get(ctx.layer, 0) + int((nq > 0).sum())
        self.found.setdefault(ctx.layer, Counter()).update(int(p) for p in ctx.key_pos[g].tolist())

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
