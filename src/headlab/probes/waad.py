"""Windowed Average Attention Distance (WAAD) per head, with an optional per-position profile.

Li et al., "Attention Illuminates LLM Reasoning: The Preplan-and-Anchor Rhythm Enables Fine-Grained
Policy Optimization", arXiv 2510.13554. For query (token) t:

    WAAD_t = Σ_{s≤t} A[t, s] · min(t − s, W)        (W = 10 tokens by default)

Clipping at W keeps one far-away glance from dominating: a head that reads the last few tokens has a
small WAAD, a head that jumps back has WAAD close to W. The head metric ``waad`` is the mean of
WAAD_t over all valid queries; ``profile=True`` also keeps the mean WAAD_t per query position
((layers, heads, positions), O(T) per head). The paper computes WAAD_t on the averaged map of the
*local* heads (the 30% with the smallest mean distance ``d``); WAAD_t is linear in the map, so that
signal is the mean of the local heads' profiles (:func:`head_groups`, :func:`token_signal`).
Positions count from each row's first real token; bidirectional models use |t − s|.

Fast form (no map): with min(g, W) = W − (W − g)⁺ for a gap g ≥ 0,

    WAAD_t = W · Σ_s A[t, s]  −  Σ_{|t − s| < W} A[t, s] · (W − |t − s|)

the first term is the row's mass (1, or the real keys' share r with sink logits), the second reads only
the W nearest diagonals (2W − 1 in bidirectional models): a band of weights recomputed from q, k and
the log-sum-exp next to SDPA (:class:`headlab.engine.fast.Band`), O(T · W) per head.
"""

from __future__ import annotations

import torch

from ..engine.context import AttnContext
from ..engine.fast import Band
from .base import Probe, acc_dtype


class PositionProfile:
    """Per (layer, head) sums and counts of a per-position value, grown as longer rows arrive."""

    def __init__(self, n_layers: int, n_heads: int) -> None:
        self.total = torch.zeros(n_layers, n_heads, 0, dtype=torch.float64)
        self.count = torch.zeros(n_layers, 0, dtype=torch.float64)

    def add(self, layer: int, pos: torch.Tensor, values: torch.Tensor, weight: torch.Tensor) -> None:
        """``pos`` (B, N) long positions (-1 = skip), ``values`` (B, H, N), ``weight`` (B, N) 0/1."""
        keep = (pos >= 0) & (weight > 0)
        if not bool(keep.any()):
            return
        need = int(pos[keep].max()) + 1
        if need > self.total.shape[-1]:
            grow = need - self.total.shape[-1]
            self.total = torch.cat([self.total, self.total.new_zeros(*self.total.shape[:2], grow)], -1)
            self.count = torch.cat([self.count, self.count.new_zeros(self.count.shape[0], grow)], -1)
        p = pos[keep].cpu()  # (K,)
        v = values.permute(1, 0, 2)[:, keep].detach().to("cpu", torch.float64)  # (H, K)
        self.total[layer].index_add_(1, p, v)
        self.count[layer].index_add_(0, p, torch.ones(p.shape[0], dtype=torch.float64))

    def mean(self) -> torch.Tensor:
        """(layers, heads, positions) float32; NaN where a position was never seen."""
        return (self.total / self.count[:, None, :]).to(torch.float32)


class WaadProbe(Probe):
    name = "waad"
    fast_needs = ("band",)
    formula = "mean over queries i of sum_j A[i, j] min(i - j, W), W = 10 (|i - j| in bidirectional models; tokens)"
    paper = 'Li et al., "Attention Illuminates LLM Reasoning: The Preplan-and-Anchor Rhythm", arXiv 2510.13554'
    role = None  # the paper sorts heads by the unclipped distance (``distance``, role "local")

    def __init__(self, window: int = 10, profile: bool = False) -> None:
        super().__init__()
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"WAAD window must be an int >= 1 (tokens), got {window!r}")
        self.window = window
        self.keep_profile = bool(profile)
        self._profile: PositionProfile | None = None

    def reset(self, n_layers: int, n_heads: int) -> None:
        super().reset(n_layers, n_heads)
        self._profile = PositionProfile(n_layers, n_heads) if self.keep_profile else None

    def update(self, a: torch.Tensor, ctx: AttnContext) -> None:
        # a (B, H, Tc, S)
        self._ensure(ctx)
        qp = ctx.chunk_query_pos()  # (B, Tc)
        d = (qp[:, :, None] - ctx.key_pos[:, None, :]).to(a.dtype)  # (B, Tc, S)
        if not ctx.causal:
            d = d.abs()
        d = d.clamp(min=0, max=self.window)  # pad keys carry no weight; pad query rows are dropped by add()
        waad = torch.einsum("bhts,bts->bht", a, d)  # (B, H, Tc)
        valid = ctx.query_valid()
        self.add(ctx, waad, valid)
        if self._profile is not None:
            self._profile.add(ctx.layer, qp, waad, valid.to(acc_dtype(a.device)))

    def band_range(self, ctx: AttnContext) -> tuple[int, int]:
        w = self.window - 1
        return (0, w) if ctx.causal else (-w, w)

    def update_fast(self, stats, ctx: AttnContext) -> None:
        pass  # everything arrives with the band

    def update_band(self, band: Band, ctx: AttnContext) -> None:
        # band.a (B, H, Tc, n) on gaps band.delta (n,); band.mass (B, H, Tc)
        self._ensure(ctx)
        near = (self.window - band.delta.abs()).clamp(min=0).to(band.a.dtype)  # (n,) W − |g| inside the window
        waad = (self.window * band.mass - torch.matmul(band.a, near)).clamp(min=0)  # (B, H, Tc); >= 0 up to rounding
        valid = ctx.query_valid()
        self.add(ctx, waad, valid)
        if self._profile is not None:
            self._profile.add(ctx.layer, ctx.chunk_query_pos(), waad, valid.to(acc_dtype(band.a.device)))

    def profile(self) -> torch.Tensor:
        """(layers, heads, positions) mean WAAD_t per query position t (needs ``profile=True``)."""
        if self._profile is None:
            raise RuntimeError("WaadProbe(profile=True) keeps the per-position profile; this probe was made without it")
        return self._profile.mean()


def head_groups(distance: torch.Tensor, frac: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """(local, global) bool masks (layers, heads): the ``frac`` of heads with the smallest and the
    largest mean distance ``d`` (the ``distance`` metric), as the paper groups them (30% each)."""
    if distance.dim() != 2:
        raise ValueError(f"distance must be (layers, heads), got shape {tuple(distance.shape)}")
    if not 0.0 < frac <= 0.5:
        raise ValueError(f"frac must be in (0, 0.5], got {frac}")
    flat = distance.reshape(-1).double()
    ok = torch.isfinite(flat)
    if not bool(ok.any()):
        raise ValueError("distance has no finite value: no head to group")
    k = max(1, int(round(frac * int(ok.sum()))))
    order = torch.argsort(torch.where(ok, flat, torch.inf))  # NaN heads last
    n_ok = int(ok.sum())
    local = torch.zeros_like(flat, dtype=torch.bool)
    glob = torch.zeros_like(flat, dtype=torch.bool)
    local[order[:k]] = True
    glob[order[n_ok - k : n_ok]] = True
    return local.view_as(distance), glob.view_as(distance)


def token_signal(profile: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """(positions,) mean over the selected heads of a (layers, heads, positions) profile: the
    signal of the heads' averaged map for a metric linear in the map (WAAD_t, FAI_s)."""
    if profile.dim() != 3 or tuple(heads.shape) != tuple(profile.shape[:2]):
        raise ValueError(
            f"profile (layers, heads, positions) {tuple(profile.shape)} and heads (layers, heads) "
            f"{tuple(heads.shape)} must agree on (layers, heads)"
        )
    if not bool(heads.any()):
        raise ValueError("heads selects no head")
    return profile[heads].mean(0)
