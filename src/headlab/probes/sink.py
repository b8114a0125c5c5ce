"""Attention-sink probes (Gu et al., "When Attention Sink Emerges in Language Models", arXiv 2410.10781).

``sink``      mean over valid queries i of A[i, first real token]
``sink_rate`` fraction of samples (row × forward call) whose α_0 = mean_i A[i, 0] exceeds ε
              (ε = 0.3, the paper's default; Sink_1^ε without the ×100), per head.
"""

from __future__ import annotations

import torch

from ..engine.context import AttnContext
from .base import Probe, RoleRule, acc_dtype


def _first_key_weight(a: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
    """A[:, :, :, first real key of each row]: (B, H, Tc); 0 in rows whose first token is no longer
    among the keys (a sliding-window cache dropped it)."""
    is0 = ctx.key_pos == 0  # (B, S)
    first = is0.float().argmax(dim=-1)  # (B,)
    idx = first[:, None, None, None].expand(a.shape[0], a.shape[1], a.shape[2], 1)
    return a.gather(-1, idx)[..., 0] * is0.any(-1).to(a.dtype)[:, None, None]


class SinkProbe(Probe):
    name = "sink"
    fast_needs = ("sink",)
    formula = "mean over queries i of A[i, 0] (key 0 = each row's first real token)"
    paper = "Gu et al., When Attention Sink Emerges in Language Models, ICLR 2025, arXiv 2410.10781"
    role = RoleRule("sink", ">=", 0.3, "S", rank=0)  # the paper's ε = 0.3

    def update(self, a, ctx):
        self.add(ctx, _first_key_weight(a, ctx), ctx.query_valid())

    def update_fast(self, stats, ctx):
        self.add(ctx, stats["sink"], ctx.query_valid())


class SinkRateProbe(Probe):
    """Per-sample ε-sink indicator averaged over samples (rows of each forward call)."""

    name = "sink_rate"
    fast_needs = ("sink",)
    formula = "fraction of samples (row x forward call) with mean_i A[i, 0] > eps (eps = 0.3)"
    paper = SinkProbe.paper

    def __init__(self, eps: float = 0.3) -> None:
        super().__init__()
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        self.eps = eps
        self._pending: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _accumulate(self, w: torch.Tensor, ctx: AttnContext) -> None:
        # w (B, H, Tc) weights on key 0 for the current chunk
        self._ensure(ctx)
        dt = acc_dtype(w.device)
        valid = ctx.query_valid().to(w.device, dt)  # (B, Tc)
        s = (torch.nan_to_num(w.to(dt)) * valid[:, None]).sum(-1)  # (B, H)
        n = valid.sum(-1)  # (B,)
        key = (ctx.layer, id(ctx))
        tot, cnt = self._pending.get(key, (torch.zeros_like(s), torch.zeros_like(n)))
        tot, cnt = tot + s, cnt + n
        T = ctx.query_pos.shape[1]
        done = ctx.q_index is None or int(ctx.q_index[-1]) == T - 1
        if not done:
            self._pending[key] = (tot, cnt)
            return
        self._pending.pop(key, None)
        has = cnt > 0
        alpha = tot[has] / cnt[has, None]  # (B', H)
        self.add_row(ctx.layer, (alpha > self.eps).to(dt).sum(0), has.to(dt).sum().expand(ctx.n_heads))

    def update(self, a, ctx):
        self._accumulate(_first_key_weight(a, ctx), ctx)

    def update_fast(self, stats, ctx):
        self._accumulate(stats["sink"], ctx)
