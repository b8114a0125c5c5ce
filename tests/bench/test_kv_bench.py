"""``headlab bench kv`` without a model: press configurations, a missing kvpress venv reported (never faked),
trial records into rows (accuracy, Wilson interval, McNemar vs headlab's dense run on the same items), the files."""

from __future__ import annotations

import json

import pytest
from conftest import word_tokenizer

from headlab.bench import kv as K
from headlab.data.longctx import item_key, make_suite

TOK = word_tokenizer(["the", "is", "pass", "key"])


@pytest.fixture(scope="module")
def items():
    return make_suite(TOK, 640, n=3, seed=0, tasks=["passkey"]) + make_suite(TOK, 640, n=2, seed=0, tasks=["niah_single", "vt"])


def _trial(stack, label, it, ok, method="m", fraction=0.35, question="after"):
    return {
        "stack": stack,
        "label": label,
        "method": method,
        "fraction": fraction,
        "prefill": "dense",
        "question": question,
        "dataset": K.dataset_of(it),
        "task": it.task,
        "key": item_key(it),
        "score": float(ok),
        "correct": ok,
        "kv_fraction": 0.35 if label != "dense" else 1.0,
        "cache_bytes": 1000.0,
        "dense_bytes": 3000.0,
        "prefill_s": 1.0,
        "decode_s": 0.5,
        "text": "",
    }


def test_press_configs():
    cfgs = K.press_configs(["snapkv", "duo_attention"], [0.25, 0.5], query_aware=True, duo_pattern="/p")
    labels = [c["label"] for c in cfgs]
    assert labels[0] == "kvpress dense" and len(cfgs) == 1 + 2 * 2 * 2
    assert "snapkv@0.25 (query-aware)" in labels and "snapkv@0.5" in labels
    assert all(c["duo_pattern"] == "/p" for c in cfgs if c["press"] == "duo_attention")
    assert {c["question"] for c in cfgs if "query-aware" in c["label"]} == {"inside"}
    with pytest.raises(ValueError, match="unknown press 'h2o'"):
        K.press_configs(["h2o"], [0.35], False)
    with pytest.raises(ValueError, match=r"KV fractions must be in \(0, 1\)"):
        K.press_configs(["snapkv"], [1.0], False)


def test_missing_kvpress_is_reported_with_its_setup_command(tmp_path):
    got = K.probe_kvpress(tmp_path / "nope" / "python")
    assert got["status"] == "missing" and "no kvpress venv" in got["why"]
    assert "bash scripts/kvpress_env.sh" in got["install"]


def test_rows_pair_with_headlab_dense(items):
    pk = [it for it in items if it.task == "passkey"]
    suite = [it for it in items if it.task != "passkey"]
    trials = [_trial("headlab", "dense", it, True, method="dense", fraction=None) for it in items]
    trials += [_trial("kvpress", "snapkv@0.35", it, i == 0) for i, it in enumerate(pk)]
    trials += [_trial("headlab", "duo@0.35 (dense prefill)", it, it.task == "vt") for it in suite]
    trials += [_trial("kvpress", "tova@0.35", pk[0], False)]  # an unfinished press
    rows = {(r["label"], r["dataset"]): r for r in K.rows(trials, items)}
    snap = rows[("snapkv@0.35", "passkey")]
    assert (snap["correct"], snap["n"], snap["complete"]) == (1, 3, True)
    assert snap["vs_dense"] == [0, 2] and snap["paired_n"] == 3
    assert snap["ci"][0] < 1 / 3 < snap["ci"][1]
    duo = rows[("duo@0.35 (dense prefill)", "suite")]
    assert duo["tasks"]["vt"]["accuracy"] == 1.0 and duo["tasks"]["niah_single"]["accuracy"] == 0.0
    assert duo["task_average"] == 0.5
    tova = rows[("tova@0.35", "passkey")]
    assert not tova["complete"] and tova["of"] == 3
    assert "vs_dense" not in rows[("dense", "passkey")]


def test_kvpress_records_are_scored_with_the_items_metric(items):
    it = next(i for i in items if i.task == "passkey")
    rec = {
        "type": "item",
        "label": "knorm@0.35",
        "key": item_key(it),
        "press": "knorm",
        "fraction": 0.35,
        "question": "after",
        "text": f" {it.answers[0]}.",
        "kept_fraction": 0.35,
        "cache_bytes": 10,
        "context_tokens": 600,
        "prefill_s": 1.0,
        "decode_s": 1.0,
    }
    (t,) = K.kvpress_trials([rec, {"type": "error", "label": "tova@0.35", "error": "boom"}], items, lambda n: 2.0 * n)
    assert t["correct"] and t["dense_bytes"] == 1200.0 and t["stack"] == "kvpress"
    assert K.errors([{"type": "error", "label": "tova@0.35", "error": "boom"}]) == [{"label": "tova@0.35", "error": "boom"}]


def test_write_states_a_missing_peer(items, tmp_path):
    trials = [_trial("headlab", "dense", it, True, method="dense", fraction=None) for it in items]
    res = {
        "config": {"model": "m", "length": 640, "passkey": 3, "suite_n": 2, "seed": 0, "fractions": [0.35]},
        "kvpress": K.probe_kvpress(tmp_path / "none"),
        "errors": [],
        "rows": K.rows(trials, items),
        "trials": trials,
    }
    K.write(res, tmp_path / "out", command="headlab bench kv")
    table = (tmp_path / "out" / "table.md").read_text()
    assert "kvpress: MISSING" in table and "bash scripts/kvpress_env.sh" in table
    assert len((tmp_path / "out" / "kv.records.jsonl").read_text().splitlines()) == len(items)
    assert json.loads((tmp_path / "out" / "kv.json").read_text())["command"] == "headlab bench kv"
    assert (tmp_path / "out" / "kv.png").stat().st_size > 1000
