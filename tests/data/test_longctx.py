"""The long-context suite (``headlab.data.longctx``): exact items from a seed, prompts fitted to the length, the
answers inside their prompts, RULER's per-task scoring, and disjointness from the planners' calibration data.
A word-level tokenizer stands in for a real one (token counts are what the fitting needs)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from conftest import word_tokenizer

from headlab.data import prose
from headlab.data.longctx import (
    SUITES,
    TASKS,
    correct,
    encode,
    item_key,
    item_seed,
    make_item,
    make_suite,
    passage_hash,
    postprocess,
    score,
    suite_digest,
)
from headlab.sparsify.eval.suite import shared_spans

TOK = word_tokenizer(["the", "is", "a", "of", "VAR", "pass", "key"])
LENGTH = 640


@pytest.fixture(scope="module")
def suite():
    return make_suite(TOK, LENGTH, n=2, seed=0, tasks=[*SUITES["long"], "passkey"])


def test_items_are_exact_functions_of_the_seed(suite):
    again = make_suite(TOK, LENGTH, n=2, seed=0, tasks=[*SUITES["long"], "passkey"])
    assert [it.to_dict() for it in again] == [it.to_dict() for it in suite]
    assert suite_digest(again) == suite_digest(suite)
    other = make_suite(TOK, LENGTH, n=2, seed=1, tasks=[*SUITES["long"], "passkey"])
    assert suite_digest(other) != suite_digest(suite)
    assert sum(a.context != b.context for a, b in zip(suite, other)) >= len(suite) - 1
    # one item alone is the same as inside its suite; every item has its own seed and key
    assert make_item("vt", 1, TOK, LENGTH, 0).to_dict() == next(it for it in suite if it.task == "vt" and it.index == 1).to_dict()
    assert len({it.seed for it in suite}) == len(suite) == len({item_key(it) for it in suite})
    assert item_seed(0, "vt", 1) != item_seed(0, "vt", 2) != item_seed(1, "vt", 1)


def test_prompts_fit_the_length(suite):
    for it in suite:
        n = encode(it, TOK).n_tokens + it.max_new
        assert n <= LENGTH, (it.task, n)
        assert n > 0.6 * LENGTH, (it.task, n)  # filled, not a short prompt
        inside = encode(it, TOK, question_inside=True)
        assert inside.question_inside and inside.n_tokens >= encode(it, TOK).n_tokens - 2


def test_answers_are_in_their_prompts(suite):
    for it in suite:
        spec = TASKS[it.task]
        if spec.kind in ("niah", "passkey"):
            assert all(a in it.context for a in it.answers)
            assert len(it.answers) == spec.values * spec.queries
        elif spec.kind == "vt":
            value = it.meta["value"]
            assert f"VAR {it.answers[0]} = {value}" in it.context
            for a, b in zip(it.answers, it.answers[1:]):
                assert f"VAR {b} = VAR {a}" in it.context
        elif spec.kind == "fwe":
            words = re.findall(r"\b[a-z]{6}\b", it.context.split("coded words.", 1)[1])
            top = [w for w, _ in Counter(words).most_common(3)]
            assert list(it.answers) == top
        else:  # qa: the gold paragraph is one of the documents
            assert any(a in it.context for a in it.answers)
            assert it.meta["documents"] >= 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        make_item("nope", 0, TOK)
    with pytest.raises(ValueError, match="length must be an integer >= 512"):
        make_item("vt", 0, TOK, length=100)
    with pytest.raises(ValueError, match="unknown suite 'short'"):
        make_suite(TOK, tasks="short")
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        make_suite(TOK, n=0)


def test_ruler_scoring_per_metric():
    assert score(" 1234567 and 7654321\x00", ["1234567", "7654321"], "all") == 1.0
    assert score("only 1234567", ["1234567", "7654321"], "all") == 0.5
    assert score("only 1234567", ["1234567", "7654321"], "part") == 1.0
    assert score("The Eiffel Tower", ["eiffel tower"], "part") == 1.0  # case-insensitive
    assert score(None, ["x"], "all") == 0.0
    assert correct("a 1 b 2", ["1", "2"], "all") and not correct("a 1", ["1", "2"], "all")
    assert postprocess("  a\x01b \n") == "a\nb"
    with pytest.raises(ValueError, match="metric must be one of"):
        score("x", ["x"], "exact")
    with pytest.raises(ValueError, match="at least one reference"):
        score("x", [], "all")


def test_suite_passages_are_not_calibration_passages(suite):
    """All three planners calibrate on CPython's help prose; no suite item reads a prose passage."""
    corpus = {passage_hash(t) for t in prose.texts()}
    sources = {h for it in suite for h in it.sources}
    assert sources and not corpus & sources
    assert shared_spans([it.context for it in suite], list(prose.texts())[:400]) == 0


def test_shared_spans_finds_a_planted_passage(suite):
    planted = prose.texts()[3]
    assert len(planted) > 200
    leaky = suite[0].context + " " + planted
    assert shared_spans([leaky], list(prose.texts())[:10]) > 0
    assert passage_hash(planted) == passage_hash("  " + planted.replace(" ", "\n ") + " ")
