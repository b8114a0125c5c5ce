"""Passkey retrieval (Mohtashami & Jaggi, arXiv 2305.16300, the Landmark Attention paper's test):
a random number hidden at a chosen depth of a long distractor text of real prose
(``headlab.data.prose.haystack``), asked for at the end as a plain completion.

    item = make_passkey(tokenizer, n_tokens=2048, depth=0.5, seed=0)
    item.prompt  # "... The pass key is 48213. Remember it. 48213 is the pass key. ... The pass key is"
    item.answer  # "48213";  item.needle_span: (start, end) character offsets of the needle in prompt
    score(item, generated_text) -> bool
    answer_correct(model, tokenizer, item) -> bool  # one teacher-forced forward = greedy exact match

    item = passkey_ids(tokenizer, 8192, depth=0.3, seed=0)   # exactly 8192 prompt tokens, essay haystack
    check_answer(model, tokenizer, item) -> (correct, mean log-prob of the key's tokens)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

INTRO = (
    "There is an important pass key hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about the pass key.\n\n"
)
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "\n\nWhat is the pass key? The pass key is"


@dataclass
class PasskeyItem:
    prompt: str
    answer: str
    needle_span: tuple[int, int]
    depth: float
    n_tokens: int
    seed: int
    input_ids: tuple[int, ...] | None = None  # set by passkey_ids: the prompt exactly as fed
    answer_ids: tuple[int, ...] | None = None


def _n_tok(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _key(n_tokens: int, depth: float, seed: int, digits: int) -> str:
    """The pass key of one item: ``digits`` random digits fixed by (seed, depth, n_tokens)."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    if not 1 <= digits <= 12:
        raise ValueError(f"digits must be in [1, 12], got {digits}")
    rng = random.Random(seed * 1_000_003 + int(depth * 1000) * 7 + n_tokens)
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def make_passkey(tokenizer, n_tokens: int, depth: float, seed: int = 0, digits: int = 5) -> PasskeyItem:
    """A prompt of about ``n_tokens`` tokens (never more) with the needle at ``depth`` in [0, 1]
    of the haystack (snapped to the next sentence end). The key has ``digits`` digits."""
    from .prose import haystack

    key = _key(n_tokens, depth, seed, digits)
    needle = NEEDLE.format(key=key)
    overhead = _n_tok(tokenizer, INTRO) + _n_tok(tokenizer, " " + needle + " ") + _n_tok(tokenizer, QUESTION) + 4
    if n_tokens < overhead + 16:
        raise ValueError(f"n_tokens must be at least {overhead + 16} for a passkey prompt, got {n_tokens}")
    hay = haystack(tokenizer, n_tokens - overhead, seed=seed)
    cut = int(len(hay) * depth)
    m = re.search(r"[.!?:]\s", hay[cut:])
    cut = cut + m.end() if (m and depth > 0) else (0 if depth == 0 else len(hay))
    before, after = hay[:cut].rstrip(), hay[cut:].lstrip()
    prompt = INTRO + before + (" " if before else "")
    start = len(prompt)
    prompt += needle
    end = len(prompt)
    prompt += (" " + after if after else "") + QUESTION
    return PasskeyItem(
        prompt=prompt, answer=key, needle_span=(start, end), depth=depth, n_tokens=_n_tok(tokenizer, prompt), seed=seed
    )


HAYSTACKS = ("essays", "pydoc")


def haystack_ids(tokenizer, n_tokens: int, seed: int, source: str = "essays") -> list[int]:
    """Exactly ``n_tokens`` token ids of distractor prose from ``source`` (one of ``HAYSTACKS``)."""
    if source == "essays":
        from .essays import haystack_ids

        return haystack_ids(tokenizer, n_tokens, seed=seed)
    if source == "pydoc":
        from .prose import haystack

        ids = tokenizer(haystack(tokenizer, n_tokens + 64, seed=seed), add_special_tokens=False)["input_ids"]
        if len(ids) < n_tokens:
            raise ValueError(f"pydoc prose gave {len(ids)} tokens, fewer than the {n_tokens} asked for")
        return list(ids[:n_tokens])
    raise ValueError(f"unknown haystack source {source!r}; choose one of {HAYSTACKS}")


def passkey_ids(tokenizer, n_tokens: int, depth: float, seed: int = 0, source: str = "essays", digits: int = 5) -> PasskeyItem:
    """A passkey prompt of exactly ``n_tokens`` tokens, built at token level (intro, haystack cut
    at a sentence end near ``depth``, needle, rest of the haystack, question), so every trial at one
    length has one shape: comparable prefill timings and one FlexAttention compile per length.
    ``source``: "essays" (RULER's Paul Graham essays, default) or "pydoc" (CPython help prose)."""
    key = _key(n_tokens, depth, seed, digits)

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    intro, needle, question = enc(INTRO), enc(" " + NEEDLE.format(key=key) + " "), enc(QUESTION)
    n_hay = n_tokens - len(intro) - len(needle) - len(question)
    if n_hay < 16:
        raise ValueError(f"n_tokens must be at least {n_tokens - n_hay + 16} for a passkey prompt, got {n_tokens}")
    hay = haystack_ids(tokenizer, n_hay, seed, source)
    cut = int(round(depth * n_hay))
    if 0 < cut < n_hay:  # move to just after the next sentence end, if one is near
        for j in range(cut, min(n_hay, cut + 64)):
            if tokenizer.decode(hay[j - 1 : j]).rstrip().endswith((".", "!", "?")):
                cut = j
                break
    ids = intro + hay[:cut] + needle + hay[cut:] + question
    full = enc(QUESTION + " " + key)
    answer = full[len(question) :] if full[: len(question)] == question else enc(" " + key)
    prompt = tokenizer.decode(ids)
    span_text = NEEDLE.format(key=key)
    start = len(tokenizer.decode(intro + hay[:cut]))  # where the needle's tokens begin in the text
    found = prompt.find(span_text, max(0, start - 8))
    a = found if found >= 0 else start
    return PasskeyItem(
        prompt=prompt,
        answer=key,
        needle_span=(a, a + len(span_text)),
        depth=depth,
        n_tokens=len(ids),
        seed=seed,
        input_ids=tuple(ids),
        answer_ids=tuple(answer),
    )


def score(item: PasskeyItem, generated: str) -> bool:
    """True when the first number in the generated continuation is the pass key."""
    m = re.search(r"\d+", generated)
    return bool(m) and m.group(0) == item.answer


@torch.no_grad()
def check_answer(model, tokenizer, item: PasskeyItem) -> tuple[bool, float]:
    """(greedy exact match of the answer tokens, mean log-probability of those tokens), from one
    teacher-forced forward pass.

    Feeding prompt + " " + answer and checking that every answer token is the argmax at its
    position is the same as greedy decoding producing the answer first. The log-probability is a
    graded signal for when accuracy alone is too coarse (few trials, weak models)."""
    if item.input_ids is not None and item.answer_ids is not None:
        p_ids, a_ids = list(item.input_ids), list(item.answer_ids)
    else:
        p_ids = tokenizer(item.prompt, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(item.prompt + " " + item.answer, add_special_tokens=False)["input_ids"][len(p_ids) :]
    if not a_ids:
        raise ValueError("the answer produced no tokens")
    ids = torch.tensor([p_ids + a_ids], device=next(model.parameters()).device)
    n = len(a_ids)
    out = model(input_ids=ids, use_cache=False, logits_to_keep=n + 1)
    logits = out.logits[0, -n - 1 : -1].float()  # (n, vocab): position t predicts answer token t
    target = torch.tensor(a_ids, device=logits.device)
    logp = torch.log_softmax(logits, -1).gather(1, target[:, None]).mean()
    return logits.argmax(-1).tolist() == a_ids, float(logp)


def answer_correct(model, tokenizer, item: PasskeyItem) -> bool:
    """Greedy exact match of the answer (see ``check_answer``)."""
    return check_answer(model, tokenizer, item)[0]
