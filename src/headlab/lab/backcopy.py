"""Bigram-backcopy sequences: a synthetic language in which an attention head is needed only at a few
positions, the setting in which Guo et al. ("Active-Dormant Attention Heads: Mechanistically Demystifying
Extreme-Token Phenomena in LLMs", arXiv 2410.13835) watch an attention sink on the first token form in
small transformers.

Every sequence starts with the same BOS token (id :data:`headlab.lab.text.BOS`) at position 0.  Tokens
0..``vocab``-1 follow a fixed random bigram chain (each token has ``branching`` possible successors with
random weights), except after a *trigger* token (ids 0..``triggers``-1): the token after a trigger copies
the token before it ("backcopy").  Predicting a copy needs attention to the previous-but-one position; every
other prediction needs only the current token, so a head that copies is idle at most positions.

:class:`BackcopyData` has the :class:`~headlab.lab.text.TextData` interface used by
:func:`headlab.lab.lm.train_lm` and :func:`headlab.lab.lm.eval_loss`: ``batch(split, batch, seq_len, gen)`` ->
inputs (B, seq_len) = [BOS, x_1..x_{seq_len-1}], targets (B, seq_len) = [x_1..x_{seq_len}].  Windows are
drawn fresh from ``gen`` for both splits (the language, not a finite corpus, is what is learned).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .text import BOS


@dataclass
class BackcopyData:
    """The chain (``successors`` (V, branching) token ids, ``weights`` (V, branching)) and trigger count."""

    successors: torch.Tensor
    weights: torch.Tensor
    triggers: int

    @classmethod
    def make(cls, vocab: int = 64, triggers: int = 3, branching: int = 4, seed: int = 0) -> BackcopyData:
        """A seeded random chain over ``vocab`` tokens.  A trigger is always preceded by a non-trigger (sequences
        start with a non-trigger and a copy repeats the non-trigger before the trigger), so copies never chain."""
        if not 1 <= triggers < vocab // 2 or not 1 <= branching <= vocab or vocab > BOS:
            raise ValueError(
                f"need 1 <= triggers < vocab/2, 1 <= branching <= vocab, vocab <= {BOS}; "
                f"got vocab={vocab}, triggers={triggers}, branching={branching}"
            )
        g = torch.Generator().manual_seed(seed)
        succ = torch.stack([torch.randperm(vocab, generator=g)[:branching] for _ in range(vocab)])  # (V, b)
        w = torch.rand(vocab, branching, generator=g) + 0.1  # (V, b) successor weights, none near zero
        return cls(succ, w / w.sum(-1, keepdim=True), triggers)

    @property
    def vocab(self) -> int:
        return self.successors.shape[0]

    def sample(self, batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
        """``length`` tokens after BOS, (batch, length); the first is a non-trigger drawn uniformly."""
        if batch < 1 or length < 1:
            raise ValueError(f"need batch >= 1 and length >= 1; got {batch}, {length}")
        first = torch.randint(self.triggers, self.vocab, (batch,), generator=gen)
        xs = [first]
        for t in range(1, length):
            cur = xs[-1]
            pick = torch.multinomial(self.weights[cur], 1, generator=gen).squeeze(1)  # (B,)
            nxt = self.successors[cur, pick]
            if t >= 2:  # a trigger at t-1 (never at t = 0): copy the token before it
                nxt = torch.where(cur < self.triggers, xs[-2], nxt)
            xs.append(nxt)
        return torch.stack(xs, 1)

    def batch(self, split: str, batch: int, seq_len: int, gen: torch.Generator):
        """Inputs (B, seq_len) = [BOS, x_1..x_{seq_len-1}] and targets (B, seq_len) = [x_1..x_{seq_len}]."""
        if split not in ("train", "val"):
            raise ValueError(f"split={split!r}; valid: 'train', 'val'")
        if seq_len < 2:
            raise ValueError(f"seq_len={seq_len} must be >= 2")
        x = self.sample(batch, seq_len, gen)
        inputs = torch.cat([torch.full((batch, 1), BOS, dtype=torch.long), x[:, :-1]], 1)
        return inputs, x
