"""Induction score (Olsson et al., "In-context Learning and Induction Heads", arXiv 2209.11895;
standard head-detector practice, SPEC §A9).

Input: [prefix] + r + r with r = n uniformly random tokens. For a query i in the second copy the
induction target is the key right after the previous occurrence of token i: j = i − n + 1.
Score = mean over second-copy queries of A[i, i − n + 1].
"""
from __future__ import annotations

import torch

from .base import Probe


class InductionProbe(Probe):
    name = "induction"

    def __init__(self, n: int, offset: int = 0) -> None:
        super().__init__()
        if n < 2:
            raise ValueError(f"repeat length n must be >= 2, got {n}")
        self.n, self.offset = n, offset

    def update(self, a, ctx):
        B, H, Tc, S = a.shape
        qpos = ctx.chunk_query_pos()  # (B, Tc)
        second = (qpos >= self.offset + self.n) & (qpos < self.offset + 2 * self.n)
        T = ctx.query_pos.shape[1]
        qabs = ctx.q_index + (S - T)
        tgt = (qabs - self.n + 1).clamp(min=0)
        w = a.gather(-1, tgt.view(1, 1, Tc, 1).expand(B, H, Tc, 1))[..., 0]
        self.add(ctx, w, second)


def repeated_random_tokens(vocab_size: int, n: int = 50, batch: int = 10, seed: int = 0,
                           prefix: list[int] | None = None, low: int = 100) -> torch.Tensor:
    """(batch, len(prefix) + 2n) long: prefix + r + r, r uniform in [low, vocab_size)."""
    if n < 2 or batch < 1:
        raise ValueError(f"need n >= 2 and batch >= 1, got n={n}, batch={batch}")
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(min(low, vocab_size - 1), vocab_size, (batch, n), generator=g)
    pre = torch.tensor(prefix or [], dtype=torch.long).expand(batch, -1)
    return torch.cat([pre, r, r], dim=1)


def induction_scores(model, n: int = 50, batch: int = 10, seed: int = 0, prefix: list[int] | None = None) -> torch.Tensor:
    """(layers, heads) induction scores on repeated random tokens."""
    from ..engine.hf import attach
    from ..measure.stats import forward_for_attention

    ids = repeated_random_tokens(model.config.vocab_size, n, batch, seed, prefix)
    probe = InductionProbe(n, offset=len(prefix or []))
    with attach(model, probes=[probe]):
        forward_for_attention(model, ids)
    return probe.result()
