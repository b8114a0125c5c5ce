"""``preplan-anchor`` (arXiv 2510.13554): the per-head signals against loops and against the WAAD / FAI probes, head
groups, peaks, the shuffled baselines and their lifts, the bootstrap, bad settings, the registered rule on synthetic
numbers, and an end-to-end run (and the CLI) on a tiny random Llama."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import _tiny_llama, save_tiny_llama
from typer.testing import CliRunner

from headlab.lab import preplan_anchor as pa
from headlab.lab import preplan_stats as S
from headlab.lab.config import PreplanAnchorConfig


def _maps(heads=3, n=13, seed=0, sharp=4.0):
    """(heads, n, n) random causal attention maps (rows sum to 1)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(heads, n, n)) * sharp
    logits[:, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] = -np.inf
    a = np.exp(logits - logits.max(-1, keepdims=True))
    return a / a.sum(-1, keepdims=True)


# ------------------------------------------------------------------ signals against plain loops
def test_signals_match_loops_at_awkward_sizes():
    a, start, w, lo, hi = _maps(heads=3, n=13), 5, 4, 2, 5
    h_, n = a.shape[:2]
    d = [np.mean([sum(a[h, t, s] * (t - s) for s in range(t + 1)) for t in range(start, n)]) for h in range(h_)]
    assert np.allclose(S.backward_distance(a, start), d)
    waad = [[sum(a[h, t, s] * min(t - s, w) for s in range(t + 1)) for t in range(start, n)] for h in range(h_)]
    assert np.allclose(S.waad_profiles(a, start, w), waad)
    fai = np.full((h_, n - start - lo), np.nan)
    for h in range(h_):
        for j, s in enumerate(range(start, n - lo)):
            ts = [t for t in range(start, n) if lo <= t - s <= hi]
            fai[h, j] = np.mean([a[h, t, s] for t in ts])
    got = S.fai_profiles(a, start, lo, hi)
    assert got.shape == fai.shape and np.allclose(got, fai)
    # linear in the map: the signal of the heads' mean map is the mean of their profiles
    assert np.allclose(
        S.waad_profiles(a[[0, 2]].mean(0, keepdims=True), start, w)[0], S.waad_profiles(a, start, w)[[0, 2]].mean(0)
    )


def test_signals_match_the_waad_and_fai_probes():
    import headlab
    from headlab.probes import FaiProbe, WaadProbe

    model = _tiny_llama(layers=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("q_proj.weight"):
                p.mul_(6.0)  # peaked maps
    ids = torch.randint(0, 101, (1, 31), generator=torch.Generator().manual_seed(1))
    start, w, lo, hi = 9, 10, 3, 12
    model.set_attn_implementation("eager")
    with torch.no_grad():
        att = torch.cat(model(ids, output_attentions=True).attentions, 1)[0].double().numpy()  # (L·H, T, T)
    model.set_attn_implementation("sdpa")
    wp, fp = WaadProbe(window=w, profile=True), FaiProbe(lo=lo, hi=hi, start=start, profile=True)
    with headlab.attach(model, probes=[wp, fp]), torch.no_grad():
        model(ids)
    waad = wp.profile().reshape(-1, 31)[:, start:].double().numpy()
    assert np.allclose(S.waad_profiles(att, start, w), waad, atol=1e-5)
    ours = S.fai_profiles(att, start, lo, hi)
    fai = fp.profile().reshape(-1, fp.profile().shape[-1])[:, start : start + ours.shape[1]].double().numpy()
    assert np.allclose(ours, fai, atol=1e-5)


def test_signal_errors():
    a = _maps(n=8)
    with pytest.raises(ValueError, match="heads, N, N"):
        S.backward_distance(a[0], 0)
    with pytest.raises(ValueError, match="start=8"):
        S.waad_profiles(a, 8)
    with pytest.raises(ValueError, match="window"):
        S.waad_profiles(a, 0, 0)
    with pytest.raises(ValueError, match="too short"):
        S.fai_profiles(a, 3, lo=5)
    with pytest.raises(ValueError, match="horizon"):
        S.fai_profiles(a, 0, lo=4, hi=3)


# ------------------------------------------------------------------ groups, receivers, peaks
def test_head_groups_and_receivers():
    d = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0])
    local, glob = S.head_groups(d, 0.3)  # round(2.1) = 2 heads each
    assert local.tolist() == [1, 5] and glob.tolist() == [2, 6]
    with pytest.raises(ValueError, match="frac"):
        S.head_groups(d, 0.6)
    fai = np.ones((4, 9))
    fai[0, 4] = 9.0  # one spike: the most concentrated profile
    fai[1, :3] = 2.0
    fai[3, 2] = 3.0
    kurt = S.excess_kurtosis(fai)
    assert kurt[2] == -np.inf and kurt[0] > kurt[3] > kurt[1]
    assert S.receiver_heads(fai, np.array([0]), 2).tolist() == [1, 3]  # head 0 is global: excluded
    with pytest.raises(ValueError, match="receiver"):
        S.receiver_heads(fai, np.array([0, 1, 2]), 2)


def test_peaks_are_local_maxima_in_the_top_quantile():
    x = np.array([0.0, 3.0, 1.0, 5.0, 5.0, 2.0, 4.0, 0.5, 6.0])
    assert np.flatnonzero(S.peaks(x, 1.0)).tolist() == [1, 3, 6, 8]  # a plateau peaks once, at its start
    assert np.flatnonzero(S.peaks(x, 0.35)).tolist() == [3, 8]  # values >= the 0.65 quantile (4.4)
    assert S.peaks(np.array([2.0]), 0.2).tolist() == [True]
    for bad in (np.array([]), np.array([1.0, np.nan])):
        with pytest.raises(ValueError, match="finite"):
            S.peaks(bad)
    with pytest.raises(ValueError, match="quantile"):
        S.peaks(x, 0.0)


def test_preceded_window():
    m = np.zeros(11, dtype=bool)
    m[[2, 9]] = True
    assert np.flatnonzero(S.preceded(m, 3)).tolist() == [2, 3, 4, 5, 9, 10]
    assert np.flatnonzero(S.preceded(m, 0)).tolist() == [2, 9]
    assert S.preceded(m[:3], 5).tolist() == [False, False, True]  # window longer than the signal
    two = S.preceded(np.stack([m, np.roll(m, 1)]), 1)
    assert np.flatnonzero(two[1]).tolist() == [3, 4, 10]
    with pytest.raises(ValueError, match="k must"):
        S.preceded(m, -1)


# ------------------------------------------------------------------ shuffled baselines and lifts
def test_shuffles_keep_the_count_and_average_to_the_expectation():
    rng = np.random.default_rng(0)
    mask = np.zeros(17, dtype=bool)
    mask[[1, 4, 9, 16]] = True
    perms = S.shuffles(mask, 4000, rng)
    assert perms.shape == (4000, 17) and (perms.sum(1) == 4).all()
    ent = np.linspace(0.0, 3.2, 17)
    obs, base = S.entropy_parts(ent, mask, perms)
    assert obs == pytest.approx(ent[mask].sum())
    assert base == pytest.approx(4 * ent.mean(), rel=0.02)  # a random 4-subset's expected sum
    g = np.zeros(17, dtype=bool)
    g[[4, 5, 9]] = True
    o, b = S.cooccur_parts(g, perms, mask)
    assert o == 2 and b == pytest.approx(3 * 4 / 17, rel=0.05)  # hypergeometric mean
    fp = g[:13]  # FAI peaks cover a prefix of the response
    o, b = S.follow_parts(fp, mask, perms, 1)
    assert o == 3  # 4 (at a WAAD peak), 5 (one after 4), 9 (at a WAAD peak)
    one = S.follow_parts(fp, mask, perms[:1], 1)[1]
    assert one == (S.preceded(perms[0], 1)[:13] & fp).sum()
    with pytest.raises(ValueError, match="permutations"):
        S.shuffles(mask, 0, rng)


def test_pooled_lift_and_bootstrap():
    assert S.pooled_lift([3.0, 3.0], [2.0, 2.0]) == pytest.approx(0.5)
    assert np.isnan(S.pooled_lift([1.0], [0.0]))
    obs, base = [6.0, 2.0, 3.0, 5.0, 4.0], [4.0, 2.0, 2.0, 3.0, 3.0]
    r = S.bootstrap_lift(obs, base, 500, seed=1)
    assert r["value"] == pytest.approx((20 / 14 - 1) * 100) and r["n"] == 5
    assert r["ci"][0] <= r["value"] <= r["ci"][1]
    idx = np.random.default_rng(1).integers(0, 5, (500, 5))  # the same resamples, by hand
    lifts = np.array(obs)[idx].sum(1) / np.array(base)[idx].sum(1) - 1
    assert r["ci"] == pytest.approx([np.quantile(lifts, 0.025) * 100, np.quantile(lifts, 0.975) * 100])
    assert S.bootstrap_lift([1.0, 1.0], [1.0, 1.0], 50)["ci"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="equal-length"):
        S.bootstrap_lift([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="resamples"):
        S.bootstrap_lift([1.0], [1.0], 0)


def test_analyse_one_response_is_seeded():
    a = _maps(heads=10, n=40, seed=3)
    ent = np.random.default_rng(0).random(40)
    cfg = PreplanAnchorConfig.make(window=4, fai_lo=3, fai_hi=12, permutations=50, min_response=12)
    one = pa.analyse(a, ent, 14, cfg, np.random.default_rng([0, 1]))
    two = pa.analyse(a, ent, 14, cfg, np.random.default_rng([0, 1]))
    assert one == two
    assert one["response_tokens"] == 26 and one["fai_keys"] == 23
    assert len(one["local_heads"]) == len(one["global_heads"]) == len(one["receiver_heads"]) == 3
    assert not set(one["receiver_heads"]) & set(one["global_heads"])
    assert one["parts"]["entropy"]["observed"] == pytest.approx(one["entropy_at_waad_peaks"] * one["waad_peaks"])


# ------------------------------------------------------------------ data, layers, settings
def test_middle_layers_and_questions():
    assert pa.middle_layers(30) == [10, 12, 15, 17, 20]
    assert pa.middle_layers(2) == [0, 1] and pa.middle_layers(1) == [0]
    q = pa.gsm8k_questions(5, seed=0)
    assert len(q) == 5 and len({i for i, _ in q}) == 5 and all(t.endswith("?") or len(t) > 20 for _, t in q)
    assert pa.gsm8k_questions(5, seed=0) == q and pa.gsm8k_questions(5, seed=1) != q
    with pytest.raises(ValueError, match="prompts"):
        pa.gsm8k_questions(0)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (dict(prompts=0), "prompts"),
        (dict(fai_hi=5), "fai_hi"),
        (dict(min_response=11), "min_response"),
        (dict(new_tokens=20), "new_tokens"),
        (dict(frac=0.6), "frac"),
        (dict(peak_q=0.0), "peak_q"),
        (dict(follow_k=-1), "follow_k"),
        (dict(permutations=0), "permutations"),
    ],
)
def test_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        pa.run(quiet=True, **bad)


# ------------------------------------------------------------------ end to end on a tiny model
def test_measure_on_a_tiny_llama():
    from conftest import word_tokenizer

    model = _tiny_llama(heads=4, layers=3)
    tok = word_tokenizer([f"w{i}" for i in range(60)])
    tok.eos_token = None  # no early stop: every response is new_tokens long
    cfg = PreplanAnchorConfig.make(new_tokens=24, min_response=14, permutations=10, bootstrap=20)
    info, rec = pa.measure(model, tok, [(7, "w1 w2 w3 ?"), (8, "w4 w5")], cfg)
    assert info["layers"] == [1, 2] and info["skipped_short"] == 0 and len(rec) == 2
    assert rec[0]["response_tokens"] == 24 and rec[0]["id"] == 7
    assert all(h.startswith("L") for h in rec[0]["local_heads"])
    lf = pa.lifts(rec, 20, 0)
    assert set(lf) == {"entropy", "cooccurrence", "follow"} and all(len(v["ci"]) == 2 for v in lf.values())


def test_cli_smoke_path_on_a_tiny_model(tmp_path, monkeypatch):
    from headlab.cli import lab as cli_lab
    from headlab.lab import SMOKE

    folder = save_tiny_llama(tmp_path / "tiny")
    monkeypatch.setitem(SMOKE, "preplan-anchor", dict(prompts=2, new_tokens=16, min_response=12, permutations=5, bootstrap=10))
    out = tmp_path / "out"
    r = CliRunner().invoke(cli_lab.app, ["preplan-anchor", "--smoke", "--model", str(folder), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "preplan-anchor.json").read_text())
    assert res["measured"]["prompts"] == 2 and res["config"]["new_tokens"] == 16
    assert res["measured"]["lift_entropy"]["paper"] == "+51.97 %"
    assert (out / "preplan-anchor.png").is_file() and len((out / "preplan-anchor.records.jsonl").read_text().splitlines()) == 2
    bad = CliRunner().invoke(cli_lab.app, ["preplan-anchor", "--prompts", "0", "--out", str(out)])
    assert bad.exit_code == 2 and "got 0" in bad.output


# ------------------------------------------------------------------ the registered rule
def _raw(vals: dict) -> dict:
    m = {f"lift_{k}": {"value": v, "ci": ci, "n": 70, "observed": 1.0, "shuffled": 1.0} for k, (v, ci) in vals.items()}
    return {"measured": {**m, "prompts": 70, "skipped_short": 0, "mean_response_tokens": 128.0}}


def test_rule_on_synthetic_numbers():
    from headlab_repro import claims as C
    from headlab_repro import preplan_claims  # noqa: F401  (registers the claim)

    c = C.REGISTRY["preplan-anchor"]
    good = {"entropy": (30.0, [10.0, 50.0]), "cooccurrence": (80.0, [20.0, 140.0]), "follow": (12.0, [2.0, 22.0])}
    x = c.summarize(_raw(good))
    assert c.judge(x)["rule_met"] and x["lift_follow"]["paper"] == "+42.47 %"
    for k, v in (
        ("follow", (12.0, [-1.0, 25.0])),
        ("entropy", (-5.0, [-9.0, -1.0])),
        ("cooccurrence", (float("nan"), [np.nan, np.nan])),
    ):
        j = c.judge(c.summarize(_raw({**good, k: v})))
        assert not j["rule_met"] and [cond["passed"] for cond in j["conditions"]].count(False) == 1, k
    assert c.size["prompts"] == PreplanAnchorConfig.prompts and c.size["new_tokens"] == PreplanAnchorConfig.new_tokens
    from headlab.lab import SMOKE

    assert PreplanAnchorConfig().record() == c.size and c.smoke_size == SMOKE["preplan-anchor"]
