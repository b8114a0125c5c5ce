"""A circuit task: clean / corrupt prompt pairs of equal token length, the answer and distractor
tokens, named token positions, and the logit-difference metric used by patching.

Prompts are left-padded (the final token is the last column of every row); ``positions`` are
counted from each row's first real token, like ``ctx.query_pos`` inside the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Task:
    """Attributes:
    name: "ioi" | "colored-objects".
    clean_texts / corrupt_texts: the prompts.
    clean_ids / corrupt_ids: (N, T) left-padded token ids; mask: (N, T) shared attention mask.
    answer: (N,) token id of the correct next token; distractors: (N, k) token ids it is compared to.
    positions: {name: (N,) long} named positions among real tokens (e.g. "IO", "S1", "S2", "END").
    """

    name: str
    clean_texts: list[str]
    corrupt_texts: list[str]
    clean_ids: torch.Tensor
    corrupt_ids: torch.Tensor
    mask: torch.Tensor
    answer: torch.Tensor
    distractors: torch.Tensor
    positions: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clean_texts)

    def logit_diff(self, logits: torch.Tensor) -> torch.Tensor:
        """(N,) logit of the answer minus the mean logit of the distractors; logits (N, V)."""
        ar = torch.arange(logits.shape[0])
        return logits[ar, self.answer] - logits[ar[:, None], self.distractors].mean(-1)

    def metric(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean logit difference over the prompts (the patching metric)."""
        return self.logit_diff(logits).mean()

    def accuracy(self, logits: torch.Tensor) -> float:
        """Share of prompts whose answer beats every distractor."""
        ar = torch.arange(logits.shape[0])
        return float((logits[ar, self.answer][:, None] > logits[ar[:, None], self.distractors]).all(-1).float().mean())

    def top1(self, logits: torch.Tensor) -> float:
        """Share of prompts whose most likely next token is the answer."""
        return float((logits.argmax(-1) == self.answer).float().mean())

    def columns(self, name: str) -> torch.Tensor:
        """(N,) column index of a named position in the padded batch."""
        pad = self.mask.shape[1] - self.mask.sum(1)
        return pad + self.positions[name]


def single_token_ids(tokenizer, words: list[str], what: str) -> dict[str, int]:
    """{word: token id} for words that are ONE token with a leading space; ``ValueError`` naming the
    words that are not."""
    out, bad = {}, []
    for w in words:
        ids = tokenizer(" " + w, add_special_tokens=False).input_ids
        if len(ids) == 1:
            out[w] = ids[0]
        else:
            bad.append(f"{w!r} -> {len(ids)} tokens")
    if bad:
        raise ValueError(
            f"{what} must be single tokens with a leading space for this tokenizer; not single: "
            + ", ".join(bad[:8])
            + (f" (+{len(bad) - 8} more)" if len(bad) > 8 else "")
        )
    return out


def single_token_words(tokenizer, words: list[str]) -> list[str]:
    """The words of ``words`` that are one token with a leading space (order kept)."""
    return [w for w in words if len(tokenizer(" " + w, add_special_tokens=False).input_ids) == 1]


def encode_pairs(tokenizer, clean: list[str], corrupt: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids of both prompt lists and the shared mask; ``ValueError`` for a pair whose
    token lengths differ."""
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        a = tokenizer(clean, return_tensors="pt", padding=True)
        b = tokenizer(corrupt, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = old
    la, lb = a.attention_mask.sum(1), b.attention_mask.sum(1)
    bad = (la != lb).nonzero().flatten()
    if len(bad) or a.input_ids.shape != b.input_ids.shape:
        i = int(bad[0]) if len(bad) else 0
        raise ValueError(
            f"prompt {i}: clean {clean[i]!r} has {int(la[i])} tokens but corrupt {corrupt[i]!r} has "
            f"{int(lb[i])}; patching needs equal token lengths"
        )
    return a.input_ids, b.input_ids, a.attention_mask


def find_position(ids: list[int], token: int, occurrence: int = 0, what: str = "token") -> int:
    """Index of the ``occurrence``-th (0-based) ``token`` in a row of real token ids."""
    hits = [i for i, t in enumerate(ids) if t == token]
    if len(hits) <= occurrence:
        raise ValueError(f"{what} (id {token}) occurs {len(hits)} times in the prompt; needed occurrence {occurrence + 1}")
    return hits[occurrence]
