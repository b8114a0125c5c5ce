"""``headlab bench plan`` (headlab.bench.plan_speed): the ideal / efficiency arithmetic, the attention-time
wrapper on a tiny random Llama, a dense plan's ideal, the output folder and the bad-input errors. No timing is
asserted beyond inequalities that hold on any machine."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import _tiny_llama
from typer.testing import CliRunner

from headlab.bench import plan_speed as PS
from headlab.engine.hf import attach
from headlab.patterns.headplan import plan_from_entries

FULL = {"pattern": "causal", "args": {}}


def _sw(sink: int, size: int) -> dict:
    return {"pattern": "sink_window", "args": {"sink": sink, "size": size}}


def _ids(n: int, vocab: int = 101) -> torch.Tensor:
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------ arithmetic
def test_ideal_is_other_time_plus_kept_share_of_attention_time():
    i = PS.ideal_plan(10.0, 4.0, 0.25)
    assert i == pytest.approx({"other_s": 6.0, "attention_s": 1.0, "ideal_s": 7.0})
    assert PS.ideal_plan(10.0, 4.0, 1.0)["ideal_s"] == pytest.approx(10.0)  # keeps everything: dense time
    assert PS.ideal_plan(10.0, 4.0, 0.0)["ideal_s"] == pytest.approx(6.0)  # keeps nothing: the rest only
    assert PS.efficiency(7.0, 8.75) == pytest.approx(0.8)
    assert PS.efficiency(7.0, 7.0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "args, word",
    [
        ((0.0, 0.0, 0.5), "dense_s"),
        ((1.0, 2.0, 0.5), "attention_s"),
        ((1.0, 0.5, 1.5), "kept"),
        ((1.0, -0.1, 0.5), "attention_s"),
    ],
)
def test_ideal_refuses_impossible_profiles(args, word):
    with pytest.raises(ValueError, match=word):
        PS.ideal_plan(*args)
    with pytest.raises(ValueError, match="plan_s"):
        PS.efficiency(1.0, 0.0)


# ------------------------------------------------------------------------------------------ the timer
def test_attention_time_is_positive_and_within_the_forward_and_the_model_is_restored():
    model = _tiny_llama()
    ids = _ids(48)
    before = model.config._attn_implementation
    with PS.AttentionTimer(model) as t:
        wall, _, _ = PS.timed(lambda: PS.prefill(model, ids))
    assert t.calls == model.config.num_hidden_layers
    assert 0 < t.seconds <= wall
    assert model.config._attn_implementation == before
    with torch.no_grad():  # the wrapper changes nothing in the output
        ref = model(input_ids=ids, use_cache=False).logits
        with PS.AttentionTimer(model):
            got = model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, ref)


def test_the_timer_wraps_headlab_inside_attach_and_restores_it():
    model = _tiny_llama()
    plan = plan_from_entries([[FULL], [_sw(2, 8)]], model, length=64)
    with attach(model, pattern=plan):
        inner = model.config._attn_implementation
        with PS.AttentionTimer(model) as t:
            PS.prefill(model, _ids(40))
        assert model.config._attn_implementation == inner and inner.startswith("headlab_")
    assert t.calls == 2 and t.seconds > 0


# ------------------------------------------------------------------------------------------ a run
def test_a_dense_plan_has_kept_share_one_and_its_ideal_is_the_dense_time():
    model = _tiny_llama()
    plan = plan_from_entries([[FULL], [FULL]], model, length=64)
    kept = plan.density(32)
    assert kept == 1.0
    r = PS.measure(model, _ids(32), plan, kept, repeats=2)
    dense = [s for s in r["samples"] if s["mode"] == "dense"]
    assert r["ideal_at_medians"]["ideal_s"] == pytest.approx(r["seconds"]["dense"]["median"])
    assert r["ideal_s"] == pytest.approx(r["seconds"]["dense"])  # per round: ideal = that round's dense time
    for d, e in zip(dense, r["efficiencies"]):
        plan_s = d["seconds"] / e  # efficiency = ideal / plan with ideal = dense time of the round
        assert math.isfinite(plan_s) and plan_s > 0
    assert r["efficiencies"] == pytest.approx(r["pair_ratios"])  # kept 1.0: efficiency is the speedup


def test_run_records_alternating_rounds_and_the_kept_share(tmp_path):
    from conftest import word_tokenizer

    model = _tiny_llama()
    plan = plan_from_entries([[_sw(1, 4)], [FULL]], model, length=64)
    res = PS.run(model, word_tokenizer(["the", "a"]), plan, length=24, repeats=3, model_name="tiny")
    r = res["lengths"]["24"]
    assert [(s["round"], s["mode"]) for s in r["samples"]] == [
        (0, "dense"), (0, "plan"), (1, "plan"), (1, "dense"), (2, "dense"), (2, "plan"),
    ]  # fmt: skip
    assert r["kept"] == pytest.approx(plan.density(24)) and 0.5 < r["kept"] < 1
    for s in r["samples"]:
        assert 0 < s["attention_s"] <= s["seconds"] and s["attention_calls"] == 2
    assert 0 < r["attention_share"]["median"] <= 1
    assert r["ideal_at_medians"]["ideal_s"] <= r["seconds"]["dense"]["median"]
    assert set(res["load"]) >= {"load_before", "load_after", "other_share"}
    PS.write(res, tmp_path / "out", "headlab bench plan --plan x.json")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["plan.json", "plan.png", "plan.records.jsonl", "table.md"]
    raw = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert raw["command"].startswith("headlab bench plan") and raw["plan"]["kept"] == pytest.approx(r["kept"])
    assert len((tmp_path / "out" / "plan.records.jsonl").read_text().splitlines()) == 6


def test_bad_lengths_and_plans_for_another_model_are_refused():
    model = _tiny_llama()  # context 256
    plan = plan_from_entries([[FULL], [_sw(1, 4)]], model, length=64)
    for n in (0, 257):
        with pytest.raises(ValueError, match=rf"--length {n} is out of range: valid lengths are 1\.\.256"):
            PS.run(model, None, plan, length=n)
    other = _tiny_llama(layers=3)
    with pytest.raises(ValueError, match="layers/heads/KV heads"):
        PS.run(other, None, plan, length=16)


def test_cli_names_a_missing_plan_file_and_a_bad_length(tmp_path):
    from headlab.cli import app

    r = CliRunner().invoke(app, ["bench", "plan", "--plan", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "nope.json" in r.stderr and "does not exist" in r.stderr
    r = CliRunner().invoke(app, ["bench", "plan", "--plan", str(tmp_path / "nope.json"), "--length", "0"])
    assert r.exit_code == 2 and "--length must be >= 1" in r.stderr and "got 0" in r.stderr


def test_cli_end_to_end_on_a_tiny_model(tmp_path):
    from conftest import save_tiny_llama

    from headlab.cli import app
    from headlab.models import load
    from headlab.patterns import save_plan

    folder = save_tiny_llama(tmp_path / "tiny")
    model, _ = load(str(folder))
    save_plan(plan_from_entries([[_sw(1, 4)], [FULL]], model, length=64), tmp_path / "p.json")
    out = tmp_path / "o"
    args = ["bench", "plan", "--plan", str(tmp_path / "p.json"), "--model", str(folder), "--length", "20"]
    r = CliRunner().invoke(app, [*args, "--rounds", "2", "--threads", "1", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["config"]["repeats"] == 2 and res["config"]["length"] == 20
    assert (out / "plan.png").is_file() and "efficiency" in (out / "table.md").read_text()
    r = CliRunner().invoke(app, [*args, "--length", "300", "--out", str(out)])
    assert r.exit_code == 2 and "valid lengths are 1..256" in r.stderr
