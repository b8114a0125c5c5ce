"""Induction-score protocol: repeated random tokens through the model with an ``InductionProbe``
(the score itself, formula and paper: :mod:`headlab.probes.induction`)."""

from __future__ import annotations

import torch

from ..engine.hf import attach
from ..probes.induction import InductionProbe
from .stats import forward_for_attention


def repeated_random_tokens(
    vocab_size: int, n: int = 50, batch: int = 10, seed: int = 0, prefix: list[int] | None = None, low: int = 100
) -> torch.Tensor:
    """(batch, len(prefix) + 2n) long: prefix + r + r, r uniform in [low, vocab_size)."""
    if n < 2 or batch < 1:
        raise ValueError(f"need n >= 2 and batch >= 1, got n={n}, batch={batch}")
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(min(low, vocab_size - 1), vocab_size, (batch, n), generator=g)
    pre = torch.tensor(prefix or [], dtype=torch.long).expand(batch, -1)
    return torch.cat([pre, r, r], dim=1)


def induction_scores(
    model, n: int = 50, batch: int = 10, seed: int = 0, prefix: list[int] | None = None, edits=()
) -> torch.Tensor:
    """(layers, heads) induction scores on ``batch`` sequences of ``n`` repeated random tokens;
    ``edits`` (headlab.edits) act during the pass."""
    ids = repeated_random_tokens(model.config.vocab_size, n, batch, seed, prefix)
    probe = InductionProbe(n, offset=len(prefix or []))
    with attach(model, probes=[probe], edits=list(edits)):
        forward_for_attention(model, ids)
    return probe.result()
