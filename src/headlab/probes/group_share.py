"""Token-group attention shares: how much of each head's attention falls on a span of tokens.

Generalises the Modality Dominance Index / Attention Efficiency Index of "When Language Overrules"
(2025) from modalities to any named token groups (document vs instruction, context vs
question, ...). Groups are key positions counted from each row's first real token:
``GroupShareProbe({"doc": range(5, 300), "question": range(300, 320)}, queries=range(320, 400))``.

Per head, pooled over the selected valid queries:
    share[g] = mean_i Σ_{j∈g} A[i, j]
    aei[g]   = share[g] / (|g| / number of visible keys), token-count normalised (1 = fair share)
``result()`` gives the share of the first group; ``results()`` gives every group's share and AEI,
and ``dominance(a, b)`` = aei[a] / aei[b] (the MDI when a = text, b = the other modality).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from .base import Probe


class GroupShareProbe(Probe):
    name = "group_share"

    def __init__(self, groups: Mapping[str, Iterable[int]], queries: Iterable[int] | None = None) -> None:
        super().__init__()
        if not groups:
            raise ValueError("give at least one token group, e.g. {'doc': range(0, 100)}")
        self.groups = {}
        for g, pos in groups.items():
            p = torch.as_tensor(list(pos), dtype=torch.long)
            if p.numel() == 0 or int(p.min()) < 0:
                raise ValueError(f"group {g!r} must be a non-empty set of positions >= 0, got {list(pos)[:5]}…")
            self.groups[g] = p
        self.queries = None if queries is None else torch.as_tensor(list(queries), dtype=torch.long)
        self._share: dict[str, Probe] = {}
        self._aei: dict[str, Probe] = {}

    def reset(self, n_layers, n_heads):
        super().reset(n_layers, n_heads)
        self._share = {g: Probe() for g in self.groups}
        self._aei = {g: Probe() for g in self.groups}
        for p in (*self._share.values(), *self._aei.values()):
            p.reset(n_layers, n_heads)

    def update(self, a, ctx):
        self._ensure(ctx)
        qpos = ctx.chunk_query_pos()  # (B, Tc)
        valid = qpos >= 0
        if self.queries is not None:
            valid = valid & torch.isin(qpos, self.queries.to(qpos.device))
        # keys a query may see (from positions, not from non-zero weights, which can underflow)
        vis = ctx.key_pos[:, None, :] >= 0  # (B, 1, S)
        if ctx.causal:
            vis = vis & (ctx.key_pos[:, None, :] <= qpos[:, :, None])  # (B, Tc, S)
        vis = vis.to(a.dtype)
        visible = vis.sum(-1).clamp(min=1)[:, None, :]  # (B, 1, Tc)
        for g, pos in self.groups.items():
            ing = torch.isin(ctx.key_pos, pos.to(ctx.key_pos.device)).to(a.dtype)  # (B, S)
            share = torch.einsum("bhts,bs->bht", a, ing)
            n_g = torch.einsum("bts,bs->bt", vis.expand(-1, qpos.shape[1], -1), ing)[:, None, :]  # (B, 1, Tc)
            self._share[g].add(ctx, share, valid)
            fair = n_g / visible
            aei = torch.where(fair > 0, share / fair.clamp(min=1e-12), torch.full_like(share, float("nan")))
            self._aei[g].add(ctx, aei, valid & (fair[:, 0] > 0))
        first = next(iter(self.groups))
        self.total, self.count = self._share[first].total, self._share[first].count

    def results(self) -> dict[str, torch.Tensor]:
        out = {}
        for g in self.groups:
            out[f"share:{g}"] = self._share[g].result()
            out[f"aei:{g}"] = self._aei[g].result()
        return out

    def states(self) -> dict[str, dict]:
        """``{"share:<g>" | "aei:<g>": {"total", "count"}}``: float64 (layers, heads) sums and counts of
        every group, so that runs over different texts (each with its own positions) add up exactly."""
        out = {}
        for g in self.groups:
            for kind, p in (("share", self._share[g]), ("aei", self._aei[g])):
                s = p.state_dict()
                out[f"{kind}:{g}"] = {"total": s["total"], "count": s["count"]}
        return out

    def dominance(self, a: str, b: str) -> torch.Tensor:
        """(layers, heads) aei[a] / aei[b]: > 1 means group a gets more than its fair share relative to b."""
        for g in (a, b):
            if g not in self.groups:
                raise ValueError(f"unknown group {g!r}: groups are {list(self.groups)}")
        return self._aei[a].result() / self._aei[b].result()
