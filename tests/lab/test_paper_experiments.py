"""The pieces of the paper experiments at tiny sizes: convex hulls and the pointer / seq2seq models (arXiv
1506.03134), the SST-2 probes and pooling heads (arXiv 2506.10178, 1808.00758, 2409.02727), the ListOps-like data
and the PoNet / softmax encoders (arXiv 2110.02442), the DSF checks (arXiv 2405.15731), and every paper claim's
registered sizes against the configuration its command line reaches."""

from __future__ import annotations

import dataclasses
import shlex

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from headlab.cli import lab as cli_lab
from headlab.lab import CONFIGS, EXPERIMENTS
from headlab.lab import dsf_equiv as dsf
from headlab.lab import pointer_hull as ph
from headlab.lab import ponet_lra as pl
from headlab.lab import probing_sst2 as ps
from headlab.lab.config import PonetLraConfig, PoolingSst2Config, ProbingSst2Config
from headlab.lab.pooling_sst2 import HEADS, PoolHead
from headlab_repro import claims as C
from headlab_repro import paper_claims as PC

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ pointer-hull
def test_convex_hull_square_and_order():
    pts = np.array([[0.5, 0.5], [1, 0], [1, 1], [0, 1], [0, 0], [0.4, 0.6]])
    hull = ph.convex_hull(pts)
    assert hull[0] == min(hull) == 1 and sorted(hull) == [1, 2, 3, 4]
    assert hull == [1, 2, 3, 4]  # counterclockwise from the lowest index
    assert ph.polygon_area(pts, hull) == pytest.approx(1.0)
    assert ph.is_simple_polygon(pts, hull)
    assert not ph.is_simple_polygon(pts, [1, 3, 2, 4])  # a bow tie
    assert not ph.is_simple_polygon(pts, [1, 2])
    with pytest.raises(ValueError, match=r"\(n >= 3, 2\)"):
        ph.convex_hull(np.zeros((2, 2)))


def test_convex_hull_matches_scipy():
    from scipy.spatial import ConvexHull

    g = np.random.default_rng(1)
    for n in (5, 12, 30):
        pts = g.random((n, 2))
        assert sorted(ph.convex_hull(pts)) == sorted(ConvexHull(pts).vertices.tolist())
        assert ph.polygon_area(pts, ph.convex_hull(pts)) == pytest.approx(ConvexHull(pts).volume)


def test_sample_batch_targets():
    pts, tgt, hulls = ph.sample_batch(4, 7, np.random.default_rng(0))
    assert pts.shape == (4, 7, 2)
    for b, h in enumerate(hulls):
        row = tgt[b].tolist()
        assert row[: len(h) + 1] == [i + 1 for i in h] + [0]
        assert all(v == ph.PAD for v in row[len(h) + 1 :])
    with pytest.raises(ValueError, match="n=2"):
        ph.sample_batch(2, 2, np.random.default_rng(0))


def test_pointer_and_seq2seq_shapes_and_decoding_constraint():
    torch.manual_seed(0)
    pts, tgt, _ = ph.sample_batch(3, 6, np.random.default_rng(0))
    ptr, s2s = ph.PtrNet(8), ph.Seq2SeqAttention(8, vocab=9)
    assert ptr(pts, tgt).shape == (3, tgt.shape[1], 7)  # (B, m, n + 1)
    assert s2s(pts, tgt).shape == (3, tgt.shape[1], 10)  # (B, m, vocab + 1)
    for model in (ptr, s2s):
        for out in model.decode(pts):
            assert len(set(out)) == len(out) and all(0 <= i < 6 for i in out)  # no repeats, no position > n
    with pytest.raises(ValueError, match="exceed the fixed dictionary"):
        s2s.decode(torch.rand(1, 12, 2))
    assert len(ph.PtrNet(8).decode(torch.rand(1, 12, 2))) == 1  # the pointer's dictionary grows with n


def test_evaluate_counts_exact_hulls():
    class Oracle(ph.PtrNet):
        def decode(self, pts):
            return [ph.convex_hull(p.numpy()) for p in pts]

    pts, _, hulls = ph.sample_batch(5, 8, np.random.default_rng(3))
    ev = ph.evaluate(Oracle(4), pts, hulls)
    assert ev["accuracy"] == 1.0 and ev["area_coverage"] == pytest.approx(1.0) and ev["invalid"] == 0.0


def test_pointer_hull_bad_sizes():
    with pytest.raises(ValueError, match="n_min"):
        ph.run(n_min=2, quiet=True)
    with pytest.raises(ValueError, match="test_n"):
        ph.run(test_n=(), quiet=True)


# ------------------------------------------------------------------------------------------ probes and pooling
def test_fold_ids_balanced_and_seeded():
    f = ps.fold_ids(10, 3, 0)
    assert sorted(np.bincount(f).tolist()) == [3, 3, 4]
    assert (f == ps.fold_ids(10, 3, 0)).all() and not (f == ps.fold_ids(10, 3, 1)).all()
    with pytest.raises(ValueError, match="folds"):
        ps.fold_ids(5, 1, 0)


def test_probes_shapes_params_and_flops():
    cfg = ProbingSst2Config.make(queries=4, mha_heads=2)
    x, mask = torch.randn(3, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1] * 5, [1, 0, 0, 0, 0]]).bool()
    for kind in ps.PROBES:
        assert ps.make_probe(kind, 8, cfg)(x, mask).shape == (3, 2)
    assert ps.n_params(ps.make_probe("ep", 8, cfg)) < ps.n_params(ps.make_probe("mha", 8, cfg))
    assert ps.probe_flops("ep", 384, 20, ProbingSst2Config()) < ps.probe_flops("mha", 384, 20, ProbingSst2Config())
    with pytest.raises(ValueError, match="probe 'x'"):
        ps.make_probe("x", 8, cfg)
    with pytest.raises(ValueError, match="mha_heads=3"):
        ps.MHAProbe(8, 3)


def test_masked_pooling_ignores_padding():
    x = torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).bool()
    y = x.clone()
    y[0, 2:] = 1e3  # padding content must not matter
    cfg = PoolingSst2Config.make(latents=2, mltp_heads=1, mltp_d_head=4)
    layers = torch.randn(2, 3, 6)
    for kind in ("mean", "max", "attsets"):
        torch.manual_seed(0)
        head = PoolHead(kind, 6, 3, cfg)
        assert torch.allclose(head.pool(x, mask, layers), head.pool(y, mask, layers), atol=1e-5), kind
    for kind in HEADS:
        assert PoolHead(kind, 6, 3, cfg)(x, mask, layers).shape == (2, 2)
    with pytest.raises(ValueError, match="pooling 'x'"):
        PoolHead("x", 6, 3, cfg)


def test_cross_fit_learns_a_separable_task():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x = torch.randn(40, 3, 4, generator=g) + 2 * y[:, None, None].float()
    mask = torch.ones(40, 3, dtype=torch.bool)
    pred, sec = ps.cross_fit(lambda: ps.LinearProbe(4, "mean"), (x, mask), y, ps.fold_ids(40, 2, 0), 60, 8, 0.05, 0)
    assert (pred == y.numpy()).mean() > 0.9 and sec > 0
    block = ps.accuracy_block((pred == y.numpy()).astype(int), np.zeros(40, int))
    assert block["n"] == 40 and block["mcnemar_p"] < 0.05


def test_sst2_sentences_are_the_raw_text():
    texts, labels = ps.sst2_sentences(3)
    assert len(texts) == 3 and set(labels) <= {0, 1}
    assert all("Review:" not in t and "Sentiment" not in t and t == t.strip() for t in texts)
    with pytest.raises(ValueError, match="items"):
        ps.sst2_sentences(-1)


# ------------------------------------------------------------------------------------------ ponet-lra
def test_listops_labels_match_an_independent_evaluator():
    toks, y = pl.listops(30, 64, 3, 4, np.random.default_rng(0))
    lengths = (toks != pl.PAD).sum(-1)
    assert ((lengths >= 32) & (lengths <= 64)).all()
    for row, v in zip(toks.tolist(), y.tolist()):
        assert pl.evaluate_tokens([t for t in row if t != pl.PAD]) == v
    assert pl._value(2, [5, 1, 9, 3]) == 3 and pl._value(3, [7, 8]) == 5  # lower median, sum mod 10
    with pytest.raises(ValueError, match="length >= 8"):
        pl.listops(2, 4, 2, 2, np.random.default_rng(0))


def test_encoders_ignore_padding_and_mixers_agree_in_shape():
    cfg = PonetLraConfig.make(d_model=8, heads=2, layers=1, segment_size=4)
    toks = torch.tensor([[11, 2, 3, 15, 0, 0], [12, 4, 5, 6, 15, 0]])
    for mixer in pl.MIXERS:
        torch.manual_seed(0)
        enc = pl.Encoder(mixer, cfg, max_len=16)
        out = enc(toks)
        assert out.shape == (2, 10)
        assert torch.allclose(enc(toks[:1, :4]), out[:1], atol=1e-5), mixer  # padding changes nothing
    with pytest.raises(ValueError, match="mixer='x'"):
        pl.Encoder("x", cfg, 16)


def test_ponet_timing_only_run():
    res = pl.run(
        steps=0,
        d_model=8,
        heads=2,
        layers=1,
        segment_size=4,
        timing_lengths=(16, 32),
        timing_batch=1,
        timing_repeats=1,
        quiet=True,
    )
    assert res.measured["models"] == {} and set(res.measured["timing"]) == {"16", "32"}
    for r in res.measured["timing"].values():
        assert len(r["pair_ratios"]) == 1 and r["ratio"]["median"] > 0
    with pytest.raises(ValueError, match="timing_lengths"):
        pl.run(steps=0, timing_lengths=(4,), quiet=True)


# ------------------------------------------------------------------------------------------ dsf-equiv
def test_dsf_equal_forms_agree_and_different_forms_do_not():
    cfg = dsf.DsfEquivConfig.make(batch=1, heads=2, length=12, d_k=4, d_v=3, features=(8, 512))
    tr = dsf.one_trial(cfg, torch.Generator().manual_seed(0))
    for k in dsf.EQUAL:
        assert tr[k] < 1e-5, k
    for k in dsf.DIFFER:
        assert tr[k] > 1e-2, k
    assert tr["softmax_rf"]["512"] < tr["softmax_rf"]["8"]


def test_positive_random_features_are_unbiased():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(4, generator=g) * 0.3, torch.randn(4, generator=g) * 0.3
    w = torch.randn(200_000, 4, generator=g)
    est = (dsf.positive_random_features(q, w) * dsf.positive_random_features(k, w)).sum()
    assert float(est) == pytest.approx(float(torch.exp(q @ k)), rel=0.02)
    assert dsf.slope([1, 10, 100], [1, 0.1, 0.01]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="features"):
        dsf.run(features=(64, 16), quiet=True)


# ------------------------------------------------------------------------------------------ the claims
PAPER_LAB_CLAIMS = sorted(n for n, c in C.all_claims().items() if c.table == PC.TABLE and c.command[0].startswith("headlab lab "))


def _config_of(command: str, monkeypatch, tmp_path):
    """The configuration a registered ``headlab lab ...`` command line hands to the experiment (nothing runs)."""
    args = shlex.split(command.replace("{out}", str(tmp_path / "out")))[2:]
    name = next(a for a in args if a in CONFIGS)
    seen = {}

    class Reached(Exception):
        pass

    def stand_in(config=None, *, quiet=False, **overrides):
        seen["config"] = CONFIGS[name].make(config, **overrides)
        raise Reached

    monkeypatch.setattr(EXPERIMENTS[name], "run", stand_in)
    r = CliRunner().invoke(cli_lab.app, args)
    assert isinstance(r.exception, Reached), (command, r.output)
    return seen["config"]


@pytest.mark.parametrize("claim", PAPER_LAB_CLAIMS)
def test_paper_claim_sizes_agree_with_the_config(claim, monkeypatch, tmp_path):
    c = C.get(claim)
    for lines, size in ((c.command, c.size), (c.smoke, c.smoke_size)):
        for line in lines:
            got = dataclasses.asdict(_config_of(line, monkeypatch, tmp_path))
            for k, v in size.items():
                have = list(got[k]) if isinstance(got[k], tuple) else got[k]
                assert have == v, f"{claim}: `{line}` gives {k}={have!r}, registered {v!r}"
            if "name" in got:
                assert got["name"] == claim


def test_every_paper_claim_notes_the_papers_headline_and_cites_arxiv():
    for name, c in C.all_claims().items():
        if c.table == PC.TABLE:
            assert "arXiv" in c.paper and "Paper" in c.notes and "Full run" in c.notes, name
            assert c.smoke and c.smoke_size, name
    assert C.get("ponet-speed").tolerance.kind == C.get("neighborhood-speed").tolerance.kind == "ratio"


def _hits(acc: float, n: int = 200, offset: int = 0) -> list[int]:
    """A 0/1 list of ``n`` items with round(acc * n) ones, rotated by ``offset`` (to set the discordant pairs)."""
    k = round(acc * n)
    row = [1] * k + [0] * (n - k)
    return row[offset:] + row[:offset]


def test_pointer_rule_on_synthetic_numbers():
    def raw(ptr10, s2s10, ptr20, area=0.95, invalid=0.05):
        def block(acc):
            return {"correct": _hits(acc), "area_coverage": area, "invalid": invalid}

        return {
            "config": {"test_n": [10, 20], "n_max": 10},
            "measured": {
                "models": {
                    "ptr_net": {"by_n": {"10": block(ptr10), "20": block(ptr20)}},
                    "seq2seq_attention": {"by_n": {"10": block(s2s10), "20": block(0.0)}},
                }
            },
        }

    c = C.get("pointer-hull")
    assert c.judge(c.summarize(raw(0.8, 0.5, 0.5)))["rule_met"]
    assert not c.judge(c.summarize(raw(0.8, 0.78, 0.5)))["rule_met"]  # not significantly better at the trained n
    assert not c.judge(c.summarize(raw(0.45, 0.1, 0.4)))["rule_met"]  # below 0.5 at the trained n
    assert not c.judge(c.summarize(raw(0.8, 0.5, 0.3)))["rule_met"]  # keeps 0.375 < 0.5 of its accuracy at n = 20
    assert not c.judge(c.summarize(raw(0.8, 0.5, 0.5, invalid=0.5)))["rule_met"]
    assert not c.judge(c.summarize(raw(0.8, 0.5, 0.5, area=0.85)))["rule_met"]
    nums = c.summarize(raw(0.8, 0.5, 0.5))
    assert "72.6" in nums["ptr_acc@10"]["paper"] and "38.9" in nums["s2s_acc@10"]["paper"]
    bad = raw(0.8, 0.5, 0.5)
    bad["config"]["n_max"] = 12
    with pytest.raises(ValueError, match="n_max = 12"):
        c.summarize(bad)


def _probe_raw(acc: dict[str, float], offsets: dict[str, int] | None = None) -> dict:
    """A probing-sst2 raw output whose probes have the given accuracies on 200 paired items."""
    offsets = offsets or {}
    hits = {k: np.array(_hits(a, offset=offsets.get(k, 0))) for k, a in acc.items()}
    probes = {
        k: {"accuracy": ps.accuracy_block(h), "params": 10, "flops": 10.0, "seconds_per_step": 0.01} for k, h in hits.items()
    }
    for k in ("linear_cls", "linear_mean", "mha"):
        probes["ep"][f"vs_{k}"] = ps.accuracy_block(hits["ep"], hits[k])
    return {"measured": {"probes": probes}}


def test_probing_rule_judges_ep_against_the_better_linear_probe():
    c = C.get("probing-sst2")
    met = c.judge(c.summarize(_probe_raw({"ep": 0.9, "linear_cls": 0.6, "linear_mean": 0.75, "mha": 0.9})))
    assert met["rule_met"] and "linear_mean" in met["verdict"]
    # beats the weak CLS probe but not the mean probe: not met
    assert not c.judge(c.summarize(_probe_raw({"ep": 0.8, "linear_cls": 0.6, "linear_mean": 0.8, "mha": 0.8})))["rule_met"]
    # more than a point below the MHA probe: not met
    assert not c.judge(c.summarize(_probe_raw({"ep": 0.9, "linear_cls": 0.6, "linear_mean": 0.7, "mha": 0.93})))["rule_met"]


def _pool_raw(acc: dict[str, float], offsets: dict[str, int] | None = None) -> dict:
    from headlab.stats import paired_difference

    offsets = offsets or {}
    hits = {k: np.array(_hits(acc[k], n=800, offset=offsets.get(k, 0))) for k in HEADS}
    heads = {k: {"accuracy": ps.accuracy_block(hits[k], None if k == "mean" else hits["mean"])} for k in HEADS}
    heads["attsets"]["vs_max"] = ps.accuracy_block(hits["attsets"], hits["max"])
    heads["mltp"]["vs_last"] = ps.accuracy_block(hits["mltp"], hits["last"])
    heads["mltp"]["diff_vs_last"] = paired_difference(hits["mltp"], hits["last"], level=0.9)
    return {"measured": {"heads": heads}}


def test_pooling_rules_on_synthetic_numbers():
    base = {"mean": 0.8, "cls": 0.7, "max": 0.75, "last": 0.8, "attsets": 0.86, "mltp": 0.8}
    att, mltp = C.get("pooling-sst2"), C.get("pooling-sst2-mltp")
    assert att.judge(att.summarize(_pool_raw(base)))["rule_met"]
    # AttSets must beat the better of mean and max, here max
    assert not att.judge(att.summarize(_pool_raw({**base, "max": 0.86})))["rule_met"]
    # same accuracy, few discordant pairs: equivalent
    assert mltp.judge(mltp.summarize(_pool_raw(base, {"mltp": 5})))["rule_met"]
    # 5 points apart: not equivalent, in either direction
    assert not mltp.judge(mltp.summarize(_pool_raw({**base, "mltp": 0.85})))["rule_met"]
    assert not mltp.judge(mltp.summarize(_pool_raw({**base, "mltp": 0.75})))["rule_met"]
    # same accuracy but so many discordant pairs that the interval is wider than the margin: not shown equivalent
    assert not mltp.judge(mltp.summarize(_pool_raw({**base, "mltp": 0.5, "last": 0.5}, {"mltp": 400})))["rule_met"]


def test_dsf_rule_fails_on_a_gap_where_forms_should_agree():
    c = C.get("dsf-equiv")
    res = dsf.run(trials=1, batch=1, heads=1, length=8, d_k=4, d_v=4, features=(16, 256, 4096), quiet=True)
    nums = c.summarize(res.to_dict())
    assert all(ok for t, ok in c.judge(nums)["conditions"] if t.startswith(("linear_is", "gated", "normalised_is")))
    nums["equal_linear_is_ssm"]["value"] = 1e-3
    assert not c.judge(nums)["rule_met"]
