"""headlab.lab: every experiment in a seconds-long smoke configuration, the result contract, the decision
helpers and the tiny LM."""
from __future__ import annotations

import json
import math

import pytest
import torch

from headlab.lab import EXPERIMENTS, FIELDS, LabResult, TextData, eval_loss, tiny_lm, train_lm
from headlab.lab.induction import BurstyTask, abrupt_window
from headlab.lab.memory_capacity import crossing
from headlab.lab.sinks import sink_metrics
from headlab.lab.text import BOS

torch.set_num_threads(1)

SMOKE = {
    "sinks": dict(steps=4, layers=1, d_model=16, heads=2, batch=4, seq_len=16, evals=2),
    "induction": dict(steps=6, K=16, D=15, batch=8, evals=3),
    "icl-regression": dict(steps=5, batch=16, test_lengths=(20,)),
    "memory-capacity": dict(d_ks=(8, 16), trials=1),
    "moh": dict(steps=3, layers=1, d_model=16, heads=4, batch=4, seq_len=16),
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_smoke_writes_documented_json_and_png(name, tmp_path):
    mod = EXPERIMENTS[name]
    res = mod.run(seed=0, quiet=True, **SMOKE[name])
    assert isinstance(res, LabResult) and res.name == name
    assert isinstance(res.reproduced, bool) and res.claim and res.rule and res.measured and res.config
    paths = res.write(tmp_path, mod.plot)
    data = json.loads(paths["json"].read_text())
    assert set(FIELDS) <= set(data) and isinstance(data["reproduced"], bool)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp")), "atomic writes leave no temp files"


def test_memory_capacity_verdict_follows_rule_from_numbers():
    res = EXPERIMENTS["memory-capacity"].run(d_ks=(8, 16, 32), trials=2, quiet=True)
    m = res.measured
    expect = 0.7 <= m["n50_slope"] <= 1.3 and all(v["acc_at_8dk"] < 0.5 for v in m["by_dk"].values())
    assert res.reproduced == expect
    for v in m["by_dk"].values():
        assert v["linear_acc"][0] > v["linear_acc"][-1]          # recall degrades with load


def test_sink_metrics_on_synthetic_weights():
    t = 16
    a = torch.zeros(1, 2, t, t)
    a[:, 0, :, 0] = 1.0                                           # head 0: everything on key 0 -> sink
    a[:, 1] = torch.ones(t, t).tril() / torch.arange(1, t + 1)[:, None]   # head 1: uniform causal
    s = sink_metrics([a], eps=0.3)
    assert s["sink_rate"] == pytest.approx(50.0)
    uniform = sum(1 / (i + 1) for i in range(t)) / t
    assert s["first_token"] == pytest.approx((1 + uniform) / 2, rel=1e-5)
    s2 = sink_metrics([a * 7.0], eps=0.3)                        # unnormalised rows give the same shares
    assert s2["first_token"] == pytest.approx(s["first_token"], rel=1e-5)


def test_abrupt_window_and_crossing_helpers():
    steps = list(range(0, 110, 10))
    acc = [0.25] * 5 + [0.4, 0.9, 0.95, 0.95, 0.95, 0.95]
    t10, t90 = abrupt_window(steps, acc, chance=0.25)
    assert (t10, t90) == (50, 60)
    assert math.isnan(abrupt_window(steps, [0.25] * 11, 0.25)[0])
    assert crossing([1, 2, 4], [1.0, 0.6, 0.2]) == pytest.approx(math.exp(math.log(2) + 0.25 * math.log(2)))
    assert crossing([1, 2], [1.0, 0.9]) == math.inf


def test_bursty_task_shapes_and_icl_labels_in_context():
    task = BurstyTask(K=16, L=8, D=15, N=4, B=2, seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = task.train_batch(5, g)
    assert x.shape == (5, 9, 15 + 9) and y.shape == (5,)
    xi, yi, match = task.icl_batch(6, g)
    assert match.sum(1).eq(2).all()                               # B copies of the query's class
    lab_tokens = xi[:, 1:8:2, :15]
    target_vec = task.labels[yi]
    hit = (lab_tokens - target_vec[:, None]).abs().sum(-1).lt(1e-6)
    assert torch.equal(hit, match)                                # the target label follows each match
    with pytest.raises(ValueError, match="multiple"):
        BurstyTask(N=5, B=2)


def test_tiny_lm_is_seeded_trains_and_validates():
    a, b = tiny_lm("gated", layers=2, d_model=24, heads=3, max_len=32, seed=5), tiny_lm("gated", 2, 24, 3, max_len=32, seed=5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    data = TextData.load()
    x, y = data.batch("train", 3, 20, torch.Generator().manual_seed(0))
    assert torch.all(x[:, 0] == BOS) and torch.equal(x[:, 1:], y[:, :-1])
    logits, weights = a(x, return_weights=True)
    assert logits.shape == (3, 20, 257) and len(weights) == 2 and weights[0].shape == (3, 3, 20, 20)
    before = eval_loss(a, data, batch=4, seq_len=32, n_batches=1)
    train_lm(a, data, steps=25, batch=8, seq_len=32, lr=3e-3, quiet=True)
    assert eval_loss(a, data, batch=4, seq_len=32, n_batches=1) < before - 0.5
    with pytest.raises(ValueError, match="max_len"):
        a(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="valid"):
        tiny_lm("nope")


def test_moh_lm_adds_aux_loss():
    lm = tiny_lm("moh-50", layers=1, d_model=32, heads=4, max_len=16)
    lm(torch.zeros(2, 10, dtype=torch.long))
    assert lm.aux_loss().item() > 0


def test_cli_smoke(tmp_path):
    from typer.testing import CliRunner

    from headlab.cli.lab import app

    r = CliRunner().invoke(app, ["memory-capacity", "--smoke", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "memory-capacity.json").read_text())["name"] == "memory-capacity"
    assert (tmp_path / "memory-capacity.png").exists()
    r = CliRunner().invoke(app, ["sinks", "--steps", "0", "--out", str(tmp_path)])
    assert r.exit_code != 0
    r = CliRunner().invoke(app, ["induction", "--pairs", "5", "--steps", "2", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "multiple of B" in r.output
