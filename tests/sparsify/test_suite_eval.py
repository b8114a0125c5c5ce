"""``evaluate_suite`` on a tiny random model: every (config, item) is one logged trial, a rerun on the same log
runs nothing, per-task rows and paired tests come from the log, and the report is written."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import llama, word_tokenizer

from headlab.data.longctx import make_suite
from headlab.patterns.headplan import plan_from_entries
from headlab.sparsify.eval import suite as S
from headlab.sparsify.eval.log import TrialLog

TOK = word_tokenizer(["the", "is", "a", "of", "VAR", "pass", "key", "magic", "number"])


@pytest.fixture(scope="module")
def setup():
    model = llama(vocab_size=len(TOK), hidden_size=32, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    model.generation_config.eos_token_id = None
    sw = {"pattern": "sink_window", "args": {"sink": 4, "size": 64}}
    plan = plan_from_entries([[{"pattern": "causal", "args": {}}, sw], [sw, sw]], model, length=640, method="duo", budget=0.5)
    items = make_suite(TOK, 640, n=2, seed=0, tasks=["niah_single", "vt"])
    for it in items:  # short answers keep the test fast
        object.__setattr__(it, "max_new", 3)
    return model, plan, items


def test_resumable_and_summarized(setup, tmp_path, monkeypatch):
    model, plan, items = setup
    path = tmp_path / "trials.jsonl"
    res = S.evaluate_suite(model, TOK, [("duo", plan)], items, question="after", prefill="dense", log=TrialLog(path))
    assert len(path.read_text().splitlines()) == 2 * len(items)
    calls = []
    monkeypatch.setattr(S, "generate", lambda *a, **k: calls.append(1))
    again = S.evaluate_suite(
        model, TOK, [("duo", plan)], items, question="after", prefill="dense", log=TrialLog(path, resume=True)
    )
    assert calls == []  # nothing reran
    assert [r.accuracy for r in again.rows] == [r.accuracy for r in res.rows]
    dense, duo = res.rows
    assert dense.label == "dense" and duo.label == "duo" and duo.prefill == "dense"
    assert set(duo.tasks) == {"niah_single", "vt"} and all(t["n"] == 2 for t in duo.tasks.values())
    assert duo.cache == "compressed" and 0 < duo.kv_fraction < 1 and dense.kv_fraction == pytest.approx(1.0)
    assert len(duo.outcomes) == len(items)
    # a different prefill is a different trial: it runs
    with pytest.raises(TypeError):  # the stub generate returns None
        S.evaluate_suite(
            model, TOK, [("duo", plan)], items[:1], question="after", prefill="sparse", log=TrialLog(path, resume=True)
        )
    assert calls == [1]


def test_generate_dense_prefill_equals_full_model_first_token(setup):
    """With windows wider than the prompt the plan's compressed cache answers as dense attention does."""
    model, _, items = setup
    wide = {"pattern": "sink_window", "args": {"sink": 4, "size": 1024}}
    full = plan_from_entries([[wide] * 2] * 2, model, length=640)
    enc = S.encode(items[0], TOK)
    a = S.generate(model, enc.context_ids, enc.question_ids, 4, None)
    b = S.generate(model, enc.context_ids, enc.question_ids, 4, full, prefill="dense")
    assert a["tokens"] == b["tokens"]
    with torch.no_grad():
        ids = torch.tensor([list(enc.context_ids) + list(enc.question_ids)])
        first = int(model(input_ids=ids).logits[0, -1].argmax())
    assert a["tokens"][0] == first


def test_report_files(setup, tmp_path):
    model, plan, items = setup
    res = S.evaluate_suite(model, TOK, [("duo", plan)], items, question="inside", log=TrialLog(tmp_path / "t.jsonl"))
    res.calibration = {
        "shared_passages": 0,
        "suite_passages": 2,
        "corpus_passages": 9,
        "shared_spans": 0,
        "span_chars": 96,
        "calibration_texts": {"duo": 1},
        "disjoint": True,
    }
    S.write_suite_report(res, tmp_path / "out", command="headlab sparsify eval --suite long")
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["label"] for r in data["rows"]] == ["dense", "duo"]
    table = (tmp_path / "out" / "table.md").read_text()
    assert "niah_single" in table and "disjoint" in table
    assert (tmp_path / "out" / "plot.png").stat().st_size > 1000


def test_bad_arguments(setup):
    model, plan, items = setup
    with pytest.raises(ValueError, match="question must be one of"):
        S.evaluate_suite(model, TOK, [("duo", plan)], items, question="before")
    with pytest.raises(ValueError, match="labels must be distinct and not 'dense'"):
        S.evaluate_suite(model, TOK, [("dense", plan)], items)
    with pytest.raises(ValueError, match="items is empty"):
        S.evaluate_suite(model, TOK, [("duo", plan)], [])
