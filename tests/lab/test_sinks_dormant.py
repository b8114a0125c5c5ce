"""The redesigned sinks experiment: attention-only / untied TinyLM, the active/dormant first-token split,
multi-seed pooling, and the sinks-dormant rules (against independent expectations)."""

from __future__ import annotations

import math

import pytest
import torch

from headlab.lab import sinks
from headlab.lab.backcopy import BackcopyData
from headlab.lab.lm import tiny_lm
from headlab_repro.claims import get


def test_attention_only_untied_model_structure():
    m = tiny_lm("softmax", layers=2, d_model=16, heads=2, vocab=40, max_len=12, mlp=False, tied=False)
    assert all(b.mlp is None and b.ln2 is None for b in m.blocks)
    assert m.head is not None and m.head.weight.shape == (40, 16)
    x = torch.randint(0, 40, (3, 12))
    # attention-only forward by hand: x + mix(LN x) per block, then LN and the untied read-out
    with torch.no_grad():
        h = m.tok(x) + m.pos.weight[:12]
        for b in m.blocks:
            h = h + b.mix(b.ln1(h))
        ref = m.head(m.ln(h))
        assert torch.allclose(m(x), ref, atol=1e-6)


def test_default_model_unchanged_by_new_knobs():
    """mlp=True, tied=True is the old model: same parameters, same seeded weights, tied read-out."""
    a = tiny_lm("softmax", layers=1, d_model=16, heads=2, vocab=30, max_len=8, seed=3)
    b = tiny_lm("softmax", layers=1, d_model=16, heads=2, vocab=30, max_len=8, seed=3, mlp=True, tied=True)
    assert a.head is None and a.blocks[0].mlp is not None
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = torch.randint(0, 30, (2, 8))
    with torch.no_grad():
        h = a.tok(x) + a.pos.weight[:8]
        blk = a.blocks[0]
        h = h + blk.mix(blk.ln1(h))
        h = h + blk.mlp(blk.ln2(h))
        assert torch.allclose(a(x), a.ln(h) @ a.tok.weight.T, atol=1e-6)


def test_split_shares_brute_force():
    g = torch.Generator().manual_seed(0)
    B, H, T = 3, 2, 7
    weights = [torch.rand(B, H, T, T, generator=g).tril() for _ in range(2)]  # unnormalised rows
    active = torch.rand(B, T, generator=g) > 0.6
    active[0, 3] = True
    got = sinks.split_shares(weights, active)
    acc = {"active_first_token": [], "dormant_first_token": []}
    for w in weights:
        for b in range(B):
            for h in range(H):
                for i in range(1, T):
                    share = (w[b, h, i, 0] / w[b, h, i].sum()).item()
                    acc["active_first_token" if active[b, i] else "dormant_first_token"].append(share)
    for k, xs in acc.items():
        assert got[k] == pytest.approx(sum(xs) / len(xs), abs=1e-6)
    with pytest.raises(ValueError, match=r"active must be \(B, T\)"):
        sinks.split_shares(weights, active[:, :5])
    none_active = sinks.split_shares(weights, torch.zeros(B, T, dtype=torch.bool))
    assert math.isnan(none_active["active_first_token"])


def test_a_parked_head_is_all_dormant_share():
    """A head that puts everything on key 0 except at active queries (previous token there)."""
    T = 6
    w = torch.zeros(1, 1, T, T)
    active = torch.tensor([[False, False, True, False, True, False]])
    for i in range(T):
        w[0, 0, i, i - 1 if active[0, i] else 0] = 1.0
    s = sinks.split_shares([w], active)
    assert s == {"active_first_token": 0.0, "dormant_first_token": 1.0}


def test_pool_means_over_seeds():
    runs = [
        {
            "seed": s,
            "step": [0, 5],
            "first_token": [0.1, 0.2 + s],
            "sink_rate": [0.0, 10.0 * s],
            "raw_first_token": [0.1, 0.3],
            "final_first_token": 0.2 + s,
            "final_sink_rate": 10.0 * s,
            "final_per_layer": [0.2 + s],
            "val_loss": 1.0 + s,
            "val_bpb": 2.0,
            "final_active_first_token": 0.0,
            "final_dormant_first_token": 0.5 * s,
        }
        for s in (0, 1, 2)
    ]
    p = sinks._pool(runs)
    assert p["final_first_token"] == pytest.approx(1.2)
    assert p["final_sink_rate"] == pytest.approx(10.0)
    assert p["sink_rate"] == [0.0, pytest.approx(10.0)]
    assert p["final_dormant_first_token"] == pytest.approx(0.5)
    assert [r["seed"] for r in p["by_seed"]] == [0, 1, 2]
    assert "by_seed" not in sinks._pool(runs[:1])


def _raw(rates: dict, firsts: dict, seeds=(0, 1, 2)) -> dict:
    """rates/firsts: mech -> per-seed list (Sink rate in %, first-token share)."""
    measured = {}
    for mech in ("softmax", "sigmoid", "gated"):
        r, f = rates[mech], firsts[mech]
        measured[mech] = {
            "final_sink_rate": sum(r) / len(r),
            "final_first_token": sum(f) / len(f),
            "val_bpb": 1.8,
            "by_seed": [
                {"seed": s, "final_sink_rate": r[i], "final_first_token": f[i], "val_bpb": 1.8} for i, s in enumerate(seeds)
            ],
        }
    return {"measured": measured, "config": {"probe_samples": 64, "layers": 1, "heads": 2, "repeats": len(seeds)}}


def test_dormant_rule_passes_and_fails_per_seed():
    c = get("sinks-dormant")
    ok = _raw(
        {"softmax": [100.0, 90.0, 25.0], "sigmoid": [0.0, 0.0, 12.5], "gated": [0.0, 5.0, 0.0]},
        {"softmax": [0.9, 0.8, 0.3], "sigmoid": [0.01, 0.02, 0.1], "gated": [0.07, 0.1, 0.2]},
    )
    nums = c.summarize(ok)
    assert nums["softmax_sink_rate"]["n"] == 3 * 64 * 2 and nums["seed2.softmax_sink_rate"]["n"] == 128
    assert nums["seed2.softmax_sink_rate"]["k"] == 32  # 25 % of 128
    assert c.judge(nums)["rule_met"]
    # seed 2's softmax below 20 %: the pooled rate (68 %) would pass, the per-seed rule must not
    bad = _raw(
        {"softmax": [100.0, 90.0, 15.0], "sigmoid": [0.0, 0.0, 0.0], "gated": [0.0, 5.0, 0.0]},
        {"softmax": [0.9, 0.8, 0.3], "sigmoid": [0.01, 0.02, 0.1], "gated": [0.07, 0.1, 0.2]},
    )
    j = c.judge(c.summarize(bad))
    assert not j["rule_met"] and [x["passed"] for x in j["conditions"]].count(False) == 1
    # sigmoid above half of softmax's in one seed
    bad2 = _raw(
        {"softmax": [100.0, 90.0, 40.0], "sigmoid": [0.0, 0.0, 21.0], "gated": [0.0, 5.0, 0.0]},
        {"softmax": [0.9, 0.8, 0.3], "sigmoid": [0.01, 0.02, 0.1], "gated": [0.07, 0.1, 0.2]},
    )
    assert not c.judge(c.summarize(bad2))["rule_met"]
    # gated first-token share not below softmax's
    bad3 = _raw(
        {"softmax": [100.0, 90.0, 40.0], "sigmoid": [0.0, 0.0, 0.0], "gated": [0.0, 5.0, 0.0]},
        {"softmax": [0.9, 0.8, 0.3], "sigmoid": [0.01, 0.02, 0.1], "gated": [0.07, 0.1, 0.3]},
    )
    assert not c.judge(c.summarize(bad3))["rule_met"]


def test_dormant_mlp_control_rule():
    c = get("sinks-dormant-mlp")
    raw = _raw(
        {"softmax": [10.0], "sigmoid": [0.0], "gated": [0.0]}, {"softmax": [0.2], "sigmoid": [0.0], "gated": [0.1]}, seeds=(0,)
    )
    raw["config"]["repeats"] = 1
    for v in raw["measured"].values():
        v.pop("by_seed")
    assert c.judge(c.summarize(raw))["rule_met"]
    raw["measured"]["softmax"]["final_sink_rate"] = 20.0
    assert not c.judge(c.summarize(raw))["rule_met"]


def test_backcopy_run_records_split_and_seeds(tmp_path):
    res = sinks.run(
        steps=3,
        layers=1,
        d_model=16,
        heads=2,
        batch=4,
        seq_len=16,
        evals=1,
        quiet=True,
        data="backcopy",
        mlp=False,
        tied=False,
        repeats=2,
        name="sinks-dormant",
    )
    soft = res.measured["softmax"]
    assert [r["seed"] for r in soft["by_seed"]] == [0, 1]
    assert 0.0 <= soft["final_dormant_first_token"] <= 1.0 and 0.0 <= soft["final_active_first_token"] <= 1.0
    assert soft["final_first_token"] == pytest.approx(sum(r["final_first_token"] for r in soft["by_seed"]) / 2)
    assert {r["seed"] for r in res.records} == {0, 1}
    assert res.config["mlp"] is False and res.config["repeats"] == 2
    with pytest.raises(ValueError, match="repeats=0"):
        sinks.run(steps=1, repeats=0, quiet=True, data="backcopy")


def test_backcopy_active_queries_are_triggers():
    data = BackcopyData.make(seed=0)
    x, y = data.batch("val", 8, 32, torch.Generator().manual_seed(1))
    active = x < data.triggers
    # at an active query the target copies the token before the trigger
    b, i = torch.nonzero(active[:, 2:], as_tuple=True)
    assert len(b) > 0
    assert torch.equal(y[b, i + 2], x[b, i + 1])
