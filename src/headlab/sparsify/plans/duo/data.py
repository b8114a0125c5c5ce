"""Synthetic retrieval data for DuoAttention-style gate training (Xiao et al., arXiv 2410.10819).

Each sample is a long prose text (CPython's pydoc help topics, ``headlab.data.prose``; never the
RULER essays used for evaluation) with several facts hidden at random depths — numeric pass codes,
key-value lines, secret word phrases — followed by questions that ask for every fact, each
answered in place:

    <intro> prose ... The second pass code is 730418. ... prose ... Key-value line: qz4k = 5521. ...
    What is the value of qz4k? The value of qz4k is 5521.
    What is the second pass code? The second pass code is 730418.

``target`` marks the question-and-answer block: DuoAttention distils the gated model against
the dense one there, where answering needs long-range retrieval. Samples are a pure function
of (tokenizer, length, seed): the same arguments give the same token ids. ``hay_ids`` replaces the
pydoc prose with other text (``headlab.data.calib.CalibText.window_ids``: the user's own file).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

import torch

INTRO = (
    "Below is a long text. Hidden in it are pass codes, key-value lines and secret phrases. "
    "Remember every one of them: you will be asked for them at the end.\n\n"
)
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
)
KINDS = ("code", "kv", "words")


@dataclass(frozen=True)
class DuoSample:
    input_ids: torch.Tensor  # (T,) long, exactly `length` tokens
    target: torch.Tensor  # (T,) bool, True on the question-and-answer block
    answers: tuple[str, ...]  # the hidden facts, in the order they are asked
    depths: tuple[float, ...]  # where the facts sit, as a fraction of the prose


def _fact(kind: str, i: int, rng: random.Random) -> tuple[str, str, str]:
    """(statement, question prefix, answer) for the i-th fact of a sample."""
    if kind == "code":
        code = str(rng.randint(100_000, 9_999_999))
        o = ORDINALS[i]
        return (f"The {o} pass code is {code}. Remember {code}.", f"What is the {o} pass code? The {o} pass code is", f" {code}.")
    if kind == "kv":
        key = "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(4))
        val = str(rng.randint(1000, 99_999))
        return (f"Key-value line: {key} = {val}.", f"What is the value of {key}? The value of {key} is", f" {val}.")
    if kind == "words":
        words = " ".join(rng.choice(WORDS) for _ in range(4))
        o = ORDINALS[i]
        return (f"The {o} secret phrase is: {words}.", f"What is the {o} secret phrase? The {o} secret phrase is:", f" {words}.")
    raise ValueError(f"unknown fact kind {kind!r}; choose one of {KINDS}")


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def make_sample(
    tokenizer,
    length: int,
    seed: int = 0,
    *,
    n_facts: int = 4,
    depth_range: tuple[float, float] = (0.05, 0.85),
    hay_ids: Callable[[int, int], list[int]] | None = None,
) -> DuoSample:
    """One training sample of exactly ``length`` tokens with ``n_facts`` hidden facts.

    ``hay_ids(n, seed)``: exactly n token ids of the prose the facts are hidden in (default: CPython's
    pydoc prose)."""
    if not 1 <= n_facts <= len(ORDINALS):
        raise ValueError(f"n_facts must be in [1, {len(ORDINALS)}], got {n_facts}")
    lo, hi = depth_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"depth_range must satisfy 0 <= lo <= hi <= 1, got {depth_range}")
    from ....data.prose import haystack

    rng = random.Random(seed * 1_000_003 + length)
    facts = [_fact(rng.choice(KINDS), i, rng) for i in range(n_facts)]
    intro = _ids(tokenizer, INTRO)
    needles = [_ids(tokenizer, " " + s + " ") for s, _, _ in facts]
    order = list(range(n_facts))
    rng.shuffle(order)
    qa: list[int] = _ids(tokenizer, "\n\n")
    for i in order:
        qa += _ids(tokenizer, facts[i][1] + facts[i][2] + "\n")
    n_hay = length - len(intro) - sum(map(len, needles)) - len(qa)
    if n_hay < 16 * n_facts:
        raise ValueError(
            f"length {length} is too short for {n_facts} facts: need at least {length - n_hay + 16 * n_facts} tokens"
        )
    if hay_ids is not None:
        hay = list(hay_ids(n_hay, seed))
        if len(hay) != n_hay:
            raise ValueError(f"hay_ids gave {len(hay)} token ids, expected {n_hay}")
    else:
        hay = _ids(tokenizer, haystack(tokenizer, n_hay + 64, seed=seed))
        while len(hay) < n_hay:  # haystack() may come out a little short: add more prose
            hay += _ids(tokenizer, " " + haystack(tokenizer, n_hay - len(hay) + 64, seed=seed + len(hay)))
        hay = hay[:n_hay]
    # insert the facts after sentence ends near random depths
    toks = tokenizer.convert_ids_to_tokens(hay)
    ends = [i + 1 for i, t in enumerate(toks) if t.rstrip().endswith(".")] or [n_hay]
    depths = sorted(rng.uniform(lo, hi) for _ in range(n_facts))
    cuts = []
    for dp in depths:
        want = int(dp * n_hay)
        cuts.append(min(ends, key=lambda e: (abs(e - want), e)))
    body: list[int] = []
    last = 0
    for cut, needle in zip(cuts, needles):
        cut = max(cut, last)
        body += hay[last:cut] + needle
        last = cut
    body += hay[last:]
    ids = intro + body + qa
    assert len(ids) == length, (len(ids), length)
    target = torch.zeros(length, dtype=torch.bool)
    target[length - len(qa) :] = True
    return DuoSample(
        torch.tensor(ids, dtype=torch.long),
        target,
        tuple(facts[i][2].strip().rstrip(".") for i in order),
        tuple(c / max(n_hay, 1) for c in cuts),
    )
