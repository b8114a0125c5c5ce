"""Future Attention Influence (FAI) per head, with an optional per-key-position profile.

Li et al., "Attention Illuminates LLM Reasoning: The Preplan-and-Anchor Rhythm Enables Fine-Grained
Policy Optimization", arXiv 2510.13554. For key (token) s, the mean attention it receives from the
later queries t within the horizon [s + lo, s + hi]:

    FAI_s = mean_{t : lo ≤ t − s ≤ hi} A[t, s]          (lo, hi = 10, 100 by default)

The head metric ``fai`` is the mean of FAI_s over every key of every row (and forward call) that has
at least one query in its horizon; a high value means the head keeps returning to earlier tokens
(anchors) from far downstream. ``profile=True`` also keeps the mean FAI_s per key position
((layers, heads, positions)); the paper's token signal is the mean of the *global* heads' profiles
(:func:`headlab.probes.waad.head_groups`, :func:`~headlab.probes.waad.token_signal`).
``start``: only queries at positions >= start count (the paper's response rows R; 0 = all).

Streaming: per forward call the probe keeps the column sums Σ_t A[t, s] over the horizon and their
query counts, (B, H, S) and (B, S) — O(T) per head — and turns them into FAI_s after the call's
last query chunk. With a KV cache every decode step is its own call (one query).

Fast form (no map): the column sums only read the diagonals lo ≤ t − s ≤ hi, so next to SDPA the probe
gets the weights on that band (hi − lo + 1 diagonals, recomputed from q, k and the log-sum-exp in blocks
of queries: :class:`headlab.engine.fast.Band`) and scatters them onto their keys — O(T · (hi − lo)) per
head instead of O(T²), the same sums and counts as from the map.
"""

from __future__ import annotations

import torch

from ..engine.context import AttnContext
from ..engine.fast import Band
from .base import Probe, acc_dtype
from .waad import PositionProfile


def last_chunk(ctx: AttnContext) -> bool:
    """Whether the current query chunk is the last of this attention call."""
    return ctx.q_index is None or int(ctx.q_index[-1]) == ctx.query_pos.shape[1] - 1


class FaiProbe(Probe):
    name = "fai"
    fast_needs = ("band",)
    formula = "mean over keys j of FAI_j = mean over queries i with 10 <= i - j <= 100 of A[i, j]"
    paper = 'Li et al., "Attention Illuminates LLM Reasoning: The Preplan-and-Anchor Rhythm", arXiv 2510.13554'
    role = None  # the paper gives no head threshold

    def __init__(self, lo: int = 10, hi: int = 100, start: int = 0, profile: bool = False) -> None:
        super().__init__()
        for nm, v in (("lo", lo), ("hi", hi), ("start", start)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"FAI {nm} must be an int >= 0, got {v!r}")
        if hi < lo or hi < 1:
            raise ValueError(f"FAI horizon [lo, hi] = [{lo}, {hi}] needs 1 <= hi and lo <= hi")
        self.lo, self.hi, self.start = lo, hi, start
        self.keep_profile = bool(profile)
        self._profile: PositionProfile | None = None
        self._pending: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def reset(self, n_layers: int, n_heads: int) -> None:
        super().reset(n_layers, n_heads)
        self._pending = {}
        self._profile = PositionProfile(n_layers, n_heads) if self.keep_profile else None

    def update(self, a: torch.Tensor, ctx: AttnContext) -> None:
        # a (B, H, Tc, S)
        self._ensure(ctx)
        dt = acc_dtype(a.device)
        qp = ctx.chunk_query_pos()  # (B, Tc)
        kp = ctx.key_pos  # (B, S)
        gap = qp[:, :, None] - kp[:, None, :]  # (B, Tc, S)
        inwin = (gap >= self.lo) & (gap <= self.hi) & (kp[:, None, :] >= 0) & (qp[:, :, None] >= self.start)
        col = torch.einsum("bhts,bts->bhs", a, inwin.to(a.dtype))  # (B, H, S)
        if not bool(torch.isfinite(col).all()):  # NaN in a pad query row: take the rows apart
            col = torch.einsum("bhts,bts->bhs", torch.where(inwin[:, None], a, 0.0), inwin.to(a.dtype))
        self._accumulate(col.to(dt), inwin.to(dt).sum(1), ctx)

    def band_range(self, ctx: AttnContext) -> tuple[int, int]:
        return (self.lo, self.hi)

    def update_fast(self, stats, ctx: AttnContext) -> None:
        pass  # everything arrives with the band

    def update_band(self, band: Band, ctx: AttnContext) -> None:
        # band.a (B, H, Tc, n) on gaps band.delta (n,) at keys band.key_index (Tc, n)
        self._ensure(ctx)
        dt = acc_dtype(band.a.device)
        B, H = band.a.shape[:2]
        S = ctx.key_pos.shape[1]
        qp = ctx.chunk_query_pos()  # (B, Tc)
        gap_in = (band.delta >= self.lo) & (band.delta <= self.hi)  # (n,)
        inwin = band.key_real & gap_in & (qp >= self.start)[:, :, None]  # (B, Tc, n); start >= 0 drops pad queries
        kc = band.key_index.clamp(0, S - 1)  # (Tc, n)
        if self._profile is not None:  # per-key values: scatter the column sums onto their keys
            idx = kc.reshape(-1)
            vals = torch.where(inwin[:, None], band.a, 0.0).reshape(B, H, -1)
            col = torch.zeros(B, H, S, dtype=band.a.dtype, device=band.a.device).index_add_(2, idx, vals)  # (B, H, S)
            n = torch.zeros(B, S, dtype=dt, device=band.a.device).index_add_(1, idx, inwin.reshape(B, -1).to(dt))
            self._accumulate(col.to(dt), n, ctx)
            return
        # head value only: Σ_s FAI_s = Σ_t Σ_s A[t, s] / n_s over the horizon, with n_s known from positions
        key = (ctx.layer, id(ctx))
        total, n = self._pending.get(key) or (torch.zeros(B, H, dtype=dt, device=band.a.device), self.key_counts(ctx))
        w = torch.where(n > 0, 1.0 / n.clamp(min=1), 0.0).to(band.a.dtype)  # (B, S)
        wb = torch.where(inwin, w[:, kc], 0.0)  # (B, Tc, n)
        tn = wb.shape[1] * wb.shape[2]
        part = torch.matmul(band.a.reshape(B, H, tn), wb.reshape(B, tn, 1))[..., 0]  # (B, H) Σ_t Σ_c A · w
        total = total + part.to(dt)
        if not last_chunk(ctx):
            self._pending[key] = (total, n)
            return
        self._pending.pop(key, None)
        self.add_row(ctx.layer, total.sum(0), (n > 0).to(dt).sum().expand(ctx.n_heads))

    def key_counts(self, ctx: AttnContext) -> torch.Tensor:
        """(B, S) float: the queries of this call within each real key's horizon (lo <= gap <= hi, query
        position >= start), from positions alone (a histogram of query positions and its cumulative sum)."""
        qp, kp = ctx.query_pos, ctx.key_pos  # (B, T), (B, S)
        dt = acc_dtype(kp.device)
        top = int(max(int(qp.max()), int(kp.max()), 0)) + 1  # positions 0 .. top - 1
        ok = qp >= self.start
        hist = torch.zeros(qp.shape[0], top + 1, dtype=dt, device=qp.device)
        hist.scatter_add_(1, torch.where(ok, qp, top), ok.to(dt))  # column `top` collects the rest
        cum = torch.nn.functional.pad(hist[:, :top].cumsum(-1), (1, 0))  # (B, top + 1): queries with position < x
        lo = (kp + self.lo).clamp(0, top)
        hi = (kp + self.hi + 1).clamp(0, top)
        n = cum.gather(1, hi) - cum.gather(1, lo)
        return torch.where(kp >= 0, n.clamp(min=0), 0.0)

    def _accumulate(self, col: torch.Tensor, n: torch.Tensor, ctx: AttnContext) -> None:
        """Add one chunk's column sums ``col`` (B, H, S) and query counts ``n`` (B, S); finish after the last."""
        dt = col.dtype
        kp = ctx.key_pos
        key = (ctx.layer, id(ctx))
        if key in self._pending:
            c0, n0 = self._pending[key]
            col, n = c0 + col, n0 + n
        if not last_chunk(ctx):
            self._pending[key] = (col, n)
            return
        self._pending.pop(key, None)
        has = n > 0  # (B, S)
        fai = torch.where(has[:, None], col / n.clamp(min=1)[:, None], 0.0)  # (B, H, S)
        self.add_row(ctx.layer, fai.sum((0, 2)), has.to(dt).sum().expand(ctx.n_heads))
        if self._profile is not None:
            self._profile.add(ctx.layer, kp, fai, has.to(dt))

    def profile(self) -> torch.Tensor:
        """(layers, heads, positions) mean FAI_s per key position s (needs ``profile=True``)."""
        if self._profile is None:
            raise RuntimeError("FaiProbe(profile=True) keeps the per-position profile; this probe was made without it")
        return self._profile.mean()
