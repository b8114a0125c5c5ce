"""Group isolation (IR-Diffusion-style, arXiv 2411.19261): tokens of different groups
cannot see each other. ``groups`` gives a group id per position; ids listed in ``shared`` are
visible to (and see) every group, e.g. a common prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Pattern


class Isolate(Pattern):
    def __init__(self, groups: Sequence[int] | torch.Tensor, shared: Sequence[int] = ()):
        g = torch.as_tensor(groups).long().reshape(-1)
        if g.numel() == 0:
            raise ValueError("isolate needs a non-empty sequence of group ids, one per position")
        self.groups = g
        self.shared = torch.as_tensor(list(shared), dtype=torch.long)
        self.name = f"isolate({int(g.unique().numel())} groups over {g.numel()} positions)"

    def check(self, q_len, kv_len):
        if kv_len > self.groups.numel():
            raise ValueError(f"isolate has group ids for {self.groups.numel()} positions, but kv_len={kv_len}")

    def rule(self, h, i, j, n):
        g = self.groups.to(torch.as_tensor(i).device)
        last = g.numel() - 1
        gi = g[torch.clamp(i, 0, last)]
        gj = g[torch.clamp(j, 0, last)]
        same = gi == gj
        if self.shared.numel():
            sh = self.shared.to(g.device)
            same = same | torch.isin(gi, sh) | torch.isin(gj, sh)
        return same


def isolate(groups, shared: Sequence[int] = ()) -> Pattern:
    """Tokens only see tokens of the same group id (``groups``: one id per position)."""
    return Isolate(groups, shared)
