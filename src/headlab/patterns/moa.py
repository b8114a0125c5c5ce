"""MoA: Mixture of Sparse Attention spans (Fu et al., arXiv 2406.14909; thu-nics/MoA).

Head h keeps a sink of ``sink`` tokens plus a causal band of width S_h(N) = alpha_h + beta_h * N
(rounded), N = kv_len, so spans stretch elastically with the input length. ``spans`` is a list
with one ``(alpha, beta)`` pair (or a plain int width) per head. With ``kv_per_head=True`` the
list is indexed by KV head, which is what saves KV cache under GQA; otherwise by query head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Pattern, check_int


class MoA(Pattern):
    def __init__(self, spans: Sequence, sink: int = 64, kv_per_head: bool = False):
        spans = list(spans)
        if not spans:
            raise ValueError("moa needs one span per head, got an empty list")
        ab = []
        for s in spans:
            if isinstance(s, (tuple, list)):
                if len(s) != 2:
                    raise ValueError(f"moa span must be (alpha, beta) or an int width, got {s!r}")
                a, b = float(s[0]), float(s[1])
                if not 0.0 <= b <= 1.0:
                    raise ValueError(f"moa beta must be in [0, 1], got {b}")
            else:
                a, b = float(check_int("moa span width", s, 1)), 0.0
            ab.append((a, b))
        self.alpha = torch.tensor([a for a, _ in ab], dtype=torch.float64)
        self.beta = torch.tensor([b for _, b in ab], dtype=torch.float64)
        self.sink = check_int("sink", sink, 0)
        self.n_heads = len(ab)
        self.kv_per_head = bool(kv_per_head)
        self.name = f"moa({len(ab)} heads, sink={self.sink})"

    def widths(self, n: int) -> torch.Tensor:
        """(n_heads,) long band widths at input length n."""
        return torch.round(self.alpha + self.beta * n).long()

    def check(self, q_len, kv_len):
        w = self.widths(kv_len)
        if (w <= 0).any():
            bad = int(torch.nonzero(w <= 0)[0])
            raise ValueError(
                f"moa head {bad} has band width {int(w[bad])} <= 0 at length {kv_len} "
                f"(alpha={float(self.alpha[bad])}, beta={float(self.beta[bad])})"
            )

    def rule(self, h, i, j, n):
        h = torch.as_tensor(h)
        w = self.widths(n).to(h.device)[h]
        d = i - j
        return (d >= 0) & ((d < w) | (j < self.sink))


def moa(spans: Sequence, sink: int = 64, kv_per_head: bool = False) -> Pattern:
    """Per-head sink + elastic band (MoA); ``spans``: [(alpha_h, beta_h) or width_h per head]."""
    return MoA(spans, sink, kv_per_head)
