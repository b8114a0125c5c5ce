"""Passkey / needle retrieval on real prose (Wu et al. retrieval-head protocol, text analogue).

A 5-digit pass key sentence is inserted at a sentence boundary at a given depth of a haystack of
CPython documentation prose (``headlab.data.prose.haystack``); the prompt ends with
"What is the pass key? The pass key is" and the answer is correct when the greedy output
contains the digits. The needle's character span is the token group "needle".
"""

from __future__ import annotations

import random

from .base import Item, Task

NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "\n\nWhat is the pass key? The pass key is"


def make(
    tokenizer, n: int = 20, n_tokens: int = 512, depths: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9), seed: int = 0
) -> Task:
    """``n`` items of about ``n_tokens`` tokens; depth cycles through ``depths`` (0 = start)."""
    from ..prose import haystack

    if n <= 0 or n_tokens < 64:
        raise ValueError(f"need n > 0 and n_tokens >= 64, got n={n}, n_tokens={n_tokens}")
    if not all(0.0 <= d <= 1.0 for d in depths):
        raise ValueError(f"depths must be in [0, 1], got {depths}")
    rng = random.Random(seed)
    items = []
    for i in range(n):
        hay = haystack(tokenizer, n_tokens - 40, seed=seed * 1000 + i)
        depth = depths[i % len(depths)]
        cut = int(len(hay) * depth)
        dot = hay.rfind(". ", 0, cut)
        cut = 0 if dot < 0 else dot + 1
        key = str(rng.randint(10000, 99999))
        needle = NEEDLE.format(key=key)
        prompt = hay[:cut] + needle + hay[cut:] + QUESTION
        items.append(
            Item(
                prompt,
                answers=[key],
                spans={"needle": (cut, cut + len(needle)), "context": (0, len(prompt) - len(QUESTION))},
                meta={"depth": depth},
            )
        )
    return Task("needle", "generate", items, max_new_tokens=8, metric="digits")
