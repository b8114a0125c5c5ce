"""Retrieval score (Wu et al., "Retrieval Head Mechanistically Explains Long-Context Factuality",
ICLR 2025, arXiv 2404.15574).

At each decode step every head's top-1 attended key j* is read (``update`` keeps it for the last
query of the call); ``credit`` then gives the head 1 / (e − s) if j* lies in the needle's answer
span [s, e) of the prompt and the prompt token at j* equals the token just generated. Summed over
the steps of one case; the protocol (needles, haystack, greedy decoding, counting only the cases
the model answers with ROUGE-1 recall > 0.5, mean over them) is :mod:`headlab.measure.retrieval`.
Heads scoring > 0.1 are retrieval heads.
"""

from __future__ import annotations

import torch

from .base import Probe, RoleRule


class RetrievalProbe(Probe):
    """Keeps, per layer, each head's top-1 key for the last query of the latest call (``last``:
    layer -> (B, H)); ``credit`` adds the retrieval score of one decode step into ``total``."""

    name = "retrieval"
    formula = (
        "per decode step, +1/|span| when a head's top-1 key lies in the needle's answer span and holds "
        "the generated token; summed over steps, mean over the cases the model answers (ROUGE-1 recall > 0.5)"
    )
    paper = "Wu et al., Retrieval Head Mechanistically Explains Long-Context Factuality, ICLR 2025, arXiv 2404.15574"
    role = RoleRule("retrieval", ">", 0.1, "R", rank=3)
    protocol = "needle-in-a-haystack decoding (headlab.measure.retrieval_scores)"

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[int, torch.Tensor] = {}

    def reset(self, n_layers: int, n_heads: int) -> None:
        super().reset(n_layers, n_heads)
        self.last = {}

    def update(self, a, ctx):
        T = ctx.query_pos.shape[1]
        if ctx.q_index is not None and int(ctx.q_index[-1]) != T - 1:
            return
        self._ensure(ctx)
        self.last[ctx.layer] = a[:, :, -1].argmax(-1)

    def credit(self, prompt: torch.Tensor, span: tuple[int, int], token: int, row: int = 0) -> None:
        """Score one decode step: ``prompt`` (P,) prompt token ids, answer ``span`` = (s, e) positions
        in it, ``token`` the id just generated; reads the top-1 keys of batch row ``row``."""
        s, e = int(span[0]), int(span[1])
        if not 0 <= s < e <= len(prompt):
            raise ValueError(f"answer span {span} must satisfy 0 <= s < e <= prompt length {len(prompt)}")
        if self.total is None:
            raise RuntimeError("RetrievalProbe.credit before any attention call: run a decode step inside attach()")
        for layer, top in self.last.items():
            j = top[row].cpu()  # (H,)
            hit = (j >= s) & (j < e) & (prompt[j.clamp(max=len(prompt) - 1)] == token)
            self.total[layer] += hit.double() / (e - s)

    def result(self) -> torch.Tensor:
        """(layers, heads) float32 score summed over the credited steps (0 where never credited)."""
        if self.total is None:
            raise RuntimeError(f"probe {self.name!r} has seen no attention call")
        return self.total.to(torch.float32)


#: the former name of :class:`RetrievalProbe`
ArgmaxProbe = RetrievalProbe
