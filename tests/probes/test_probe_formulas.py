"""WAAD, FAI, magnet and global-sink probes against their formulas on eager attention maps (tiny
random Llama, GQA, T = 63, padding on both sides, small query chunks); token groups on the CLI (MDI /
AEI), the dilution curve and CARVE's contrast."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import _tiny_llama, save_tiny_llama
from typer.testing import CliRunner

import headlab
import headlab.engine.attend as attend_mod
from headlab.probes import FaiProbe, GlobalSinkProbe, GroupShareProbe, MagnetProbe, WaadProbe
from headlab.probes.magnet import is_magnet, magnet_fraction, magnet_ids
from headlab.probes.waad import head_groups, token_signal

T = 63


@pytest.fixture
def sharp_llama():
    """Tiny random Llama (3 query heads on 1 KV head, d = 40) with sharpened queries, so that maps
    are peaked (random maps are nearly uniform and would not tell the formulas apart)."""
    m = _tiny_llama()
    with torch.no_grad():
        for name, w in m.named_parameters():
            if name.endswith("self_attn.q_proj.weight"):
                w.mul_(6.0)
    return m


def _inputs():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 101, (2, T), generator=g)
    am = torch.ones(2, T, dtype=torch.long)
    am[0, :5] = 0  # left padding
    am[1, -7:] = 0  # right padding
    return ids, am


def _positions(am):
    valid = am.bool()
    return (valid.long().cumsum(-1) - 1).masked_fill(~valid, -1)


def _eager(model, ids, am):
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            o = model(ids, attention_mask=am, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    return [a.double() for a in o.attentions]  # L x (B, H, T, T)


def _run(model, probes, ids, am, monkeypatch, chunk=7, state=None):
    monkeypatch.setattr(attend_mod, "default_chunk", lambda *a: chunk)
    with headlab.attach(model, probes=probes, state=state) as run, torch.no_grad():
        model(ids, attention_mask=am)
    return run


# ------------------------------------------------------------------ direct formulas, loop by loop
def ref_waad(atts, am, W=10):
    pos = _positions(am)
    out = torch.zeros(len(atts), atts[0].shape[1], dtype=torch.float64)
    for layer, a in enumerate(atts):
        B, H = a.shape[:2]
        for h in range(H):
            vals = []
            for b in range(B):
                for t in range(T):
                    if pos[b, t] < 0:
                        continue
                    s = sum(
                        float(a[b, h, t, j]) * min(int(pos[b, t] - pos[b, j]), W)
                        for j in range(T)
                        if pos[b, j] >= 0 and pos[b, j] <= pos[b, t]
                    )
                    vals.append(s)
            out[layer, h] = sum(vals) / len(vals)
    return out


def ref_fai_profile(atts, am, lo=10, hi=100):
    """(head values (L, H), {(layer, head, position): [FAI_s]})."""
    pos = _positions(am)
    out = torch.zeros(len(atts), atts[0].shape[1], dtype=torch.float64)
    prof = {}
    for layer, a in enumerate(atts):
        B, H = a.shape[:2]
        for h in range(H):
            vals = []
            for b in range(B):
                for s in range(T):
                    if pos[b, s] < 0:
                        continue
                    ts = [t for t in range(T) if pos[b, t] >= 0 and lo <= int(pos[b, t] - pos[b, s]) <= hi]
                    if ts:
                        f = sum(float(a[b, h, t, s]) for t in ts) / len(ts)
                        vals.append(f)
                        prof.setdefault((layer, h, int(pos[b, s])), []).append(f)
            out[layer, h] = sum(vals) / len(vals)
    return out, prof


def ref_fai(atts, am, lo=10, hi=100):
    return ref_fai_profile(atts, am, lo, hi)[0]


def ref_magnet(atts, am, ids, mids):
    pos = _positions(am)
    is_m = torch.isin(ids, torch.tensor(mids)) & (pos > 0)
    out = []
    for a in atts:
        share = torch.einsum("bhts,bs->bht", a, is_m.double())
        w = (pos >= 0).double()[:, None]
        out.append((share * w).sum((0, 2)) / w.sum((0, 2)))
    return torch.stack(out)


def ref_global_sink(atts, am, tau, rho):
    pos = _positions(am)
    out, found = [], []
    for a in atts:
        B, H = a.shape[:2]
        tot = torch.zeros(H, dtype=torch.float64)
        nq = 0
        sinks = set()
        for b in range(B):
            qs = [t for t in range(T) if pos[b, t] >= 0]
            G = []
            for j in range(T):
                if pos[b, j] < 0:
                    continue
                high = sum(int(a[b, h, t, j] >= tau) for h in range(H) for t in qs)
                if high / (H * len(qs)) >= rho:
                    G.append(j)
                    sinks.add(int(pos[b, j]))
            for t in qs:
                tot += a[b, :, t, G].sum(-1)
            nq += len(qs)
        out.append(tot / nq)
        found.append(sinks)
    return torch.stack(out), found


# ------------------------------------------------------------------ the probes against the formulas
def test_waad_matches_formula(sharp_llama, monkeypatch):
    ids, am = _inputs()
    atts = _eager(sharp_llama, ids, am)
    for W in (10, 3):
        p = WaadProbe(window=W)
        _run(sharp_llama, [p], ids, am, monkeypatch)
        assert torch.allclose(p.result().double(), ref_waad(atts, am, W), atol=1e-4), W
    # clipping matters: W = 3 is smaller than W = 10, and WAAD never exceeds W
    assert (p.result() <= 3 + 1e-5).all()


def test_fai_matches_formula(sharp_llama, monkeypatch):
    ids, am = _inputs()
    atts = _eager(sharp_llama, ids, am)
    for lo, hi in ((10, 100), (3, 7)):
        p = FaiProbe(lo=lo, hi=hi)
        _run(sharp_llama, [p], ids, am, monkeypatch)
        assert torch.allclose(p.result().double(), ref_fai(atts, am, lo, hi), atol=1e-5), (lo, hi)


def test_fai_and_waad_profiles_per_position(sharp_llama, monkeypatch):
    ids, am = _inputs()
    ids, am = ids[:1], am[:1]  # one text: the profile is that text's per-token signal
    atts = _eager(sharp_llama, ids, am)
    p = FaiProbe(lo=3, hi=20, profile=True)
    w = WaadProbe(profile=True)
    _run(sharp_llama, [p, w], ids, am, monkeypatch)
    _, prof = ref_fai_profile(atts, am, 3, 20)
    got = p.profile()
    for (layer, h, s), v in prof.items():
        assert abs(float(got[layer, h, s]) - v[0]) < 1e-5
    n_real = int(am.sum())
    assert got.shape[-1] == n_real - 3 and torch.isfinite(got).all()  # keys with a query 3..20 later
    wp = w.profile()  # (L, H, positions): WAAD_t per query position
    assert wp.shape == (2, 3, n_real)
    assert torch.allclose(wp.double().nanmean(-1), w.result().double(), atol=1e-5)  # one row: mean of the profile
    local, glob = head_groups(torch.tensor([[1.0, 5.0, 9.0], [2.0, 7.0, 3.0]]), frac=0.34)
    assert local.tolist() == [[True, False, False], [True, False, False]]
    assert glob.tolist() == [[False, False, True], [False, True, False]]
    sig = token_signal(got, glob)
    assert torch.allclose(sig, (got[0, 2] + got[1, 1]) / 2)
    with pytest.raises(ValueError, match="must agree"):
        token_signal(got, glob[:1])
    with pytest.raises(RuntimeError, match="profile=True"):
        FaiProbe().profile()


def test_magnet_matches_formula(sharp_llama, monkeypatch):
    ids, am = _inputs()
    atts = _eager(sharp_llama, ids, am)
    mids = list(range(0, 101, 3))
    for p, state in (
        (MagnetProbe(), {"input_ids": ids, "magnet_ids": torch.tensor(mids)}),
        (MagnetProbe(mids), {"input_ids": ids}),
    ):
        _run(sharp_llama, [p], ids, am, monkeypatch, state=state)
        assert torch.allclose(p.result().double(), ref_magnet(atts, am, ids, mids), atol=1e-5)
    with pytest.raises(RuntimeError, match="needs each key's token"):
        _run(sharp_llama, [MagnetProbe()], ids, am, monkeypatch)
    with pytest.raises(ValueError, match=r"has shape \(2, 62\) but the keys are"):
        _run(sharp_llama, [MagnetProbe(mids)], ids, am, monkeypatch, state={"input_ids": ids[:, 1:]})


def test_global_sink_matches_formula(sharp_llama, monkeypatch):
    ids, am = _inputs()
    atts = _eager(sharp_llama, ids, am)
    for tau, rho in ((0.05, 0.3), (0.1, 0.1)):
        want, found = ref_global_sink(atts, am, tau, rho)
        assert any(found), "the settings must detect some sink, or the test could not fail"
        p = GlobalSinkProbe(tau=tau, rho=rho)
        _run(sharp_llama, [p], ids, am, monkeypatch)
        assert torch.allclose(p.result().double(), want, atol=1e-5), (tau, rho)
        assert {layer: set(v) for layer, v in p.sinks().items()} == {layer: s for layer, s in enumerate(found) if s}
    with pytest.raises(ValueError, match="tau"):
        GlobalSinkProbe(tau=0)
    with pytest.raises(ValueError, match="rho"):
        GlobalSinkProbe(rho=1.5)


def test_chunking_does_not_change_the_per_call_probes(sharp_llama, monkeypatch):
    ids, am = _inputs()
    res = {}
    for chunk in (5, 63):
        ps = [FaiProbe(lo=2, hi=30), GlobalSinkProbe(tau=0.1, rho=0.4), WaadProbe()]
        _run(sharp_llama, ps, ids, am, monkeypatch, chunk=chunk)
        res[chunk] = [p.result() for p in ps]
    for a, b in zip(res[5], res[63], strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_bad_probe_arguments():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            WaadProbe(window=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[lo, hi\] = \[10, 5\]"):
        FaiProbe(lo=10, hi=5)
    with pytest.raises(ValueError, match="start"):
        FaiProbe(start=-1)


# ------------------------------------------------------------------ magnet tokens
class _Tok:
    all_special_ids = [0]

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def test_magnet_tokens():
    assert is_magnet(" the") and is_magnet("The") and is_magnet(",") and is_magnet("\n") and is_magnet(" ...")
    assert not is_magnet(" cat") and not is_magnet("Paris") and not is_magnet(" 42")
    tok = _Tok(["<s>", " The", " cat", ".", " of", "dog"])
    assert magnet_ids(tok, [0, 1, 2, 3, 4, 5, 1]).tolist() == [1, 3, 4]  # the special token is not a magnet
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert magnet_fraction(ids, torch.tensor([1, 3, 4])) == pytest.approx(2 / 4)  # the first token is left out


# ------------------------------------------------------------------ token groups (MDI / AEI) on the CLI
def test_parse_groups():
    from headlab.measure.dilution import parse_group, parse_groups, resolve_groups

    g = parse_group("doc=0-3,8,10-")
    assert g.positions(14) == [0, 1, 2, 3, 8, 10, 11, 12, 13]
    assert parse_group("q=last:3").positions(10) == [7, 8, 9]
    gs = parse_groups(["a=0-1", "b=rest"])
    assert resolve_groups(gs, 5) == {"a": [0, 1], "b": [2, 3, 4]}
    for bad, msg in (
        ("nodash", "must look like NAME=SPEC"),
        ("1x=0-3", "the name '1x'"),
        ("doc=5-2", "'5-2' ends before it starts"),
        ("doc=a-b", "bad part 'a-b'"),
        ("doc=last:0", "last:N needs an integer N >= 1, got '0'"),
        ("doc=text:", "non-empty substring"),
    ):
        with pytest.raises(ValueError, match=msg):
            parse_group(bad)
    with pytest.raises(ValueError, match="given twice"):
        parse_groups(["a=0", "a=1"])
    with pytest.raises(ValueError, match="only one --group may be 'rest'"):
        parse_groups(["a=0", "b=rest", "c=rest"])
    with pytest.raises(ValueError, match=r"--group far=50-60 matches no token of text #2 \(9 tokens\)"):
        resolve_groups(parse_groups(["far=50-60"]), 9, where="text #2")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny"))


TEXTS = [
    "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 Answer w13 w14",
    "w20 w21 w22 Answer w23 w24 w25 w26 w27 w28 w29 w30 w31 w32 w33 w34 w35 w36",
]


def _load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_scan_groups_match_the_group_probe(tiny_folder):
    from headlab.measure.scan import run_scan

    m, tok = _load(tiny_folder)
    groups = ["doc=0-2", "ans=text:Answer", "other=rest"]
    res = run_scan(m, tok, "tiny", TEXTS, ["sink", "magnet"], max_tokens=64, head_maps=0, groups=groups, group_queries="last:4")
    names = ["share:doc", "aei:doc", "share:ans", "aei:ans", "share:other", "aei:other", "mdi:doc/ans", "mdi:doc/other"]
    assert res.meta["metrics"] == ["sink", "magnet", *names]
    assert res.meta["groups"] == {"doc": "0-2", "ans": "text:Answer", "other": "rest"}
    assert all(m in res.meta["formulas"] for m in names) and "2508.10552" in res.meta["formulas"]["aei:doc"]
    # the same with the probe, one text at a time, pooled over both texts' queries
    tot = {k: torch.zeros(2, 3, dtype=torch.float64) for k in ("doc", "ans", "other")}
    n = 0
    for text, ans_pos in zip(TEXTS, (12, 3), strict=True):
        ids = tok(text, return_tensors="pt")["input_ids"]
        L = ids.shape[1]
        assert tok.convert_ids_to_tokens(int(ids[0, ans_pos])) == "[UNK]"  # "Answer" is not a w-word
        grp = {"doc": range(3), "ans": [ans_pos], "other": [p for p in range(L) if p >= 3 and p != ans_pos]}
        p = GroupShareProbe(grp, queries=range(L - 4, L))
        with headlab.attach(m, probes=[p]), torch.no_grad():
            m(ids)
        for k in tot:
            tot[k] += p.results()[f"share:{k}"].double() * 4
        n += 4
    got = {r["layer"] * 3 + r["head"]: r for r in res.records}
    for k in tot:
        want = (tot[k] / n).reshape(-1)
        assert torch.allclose(torch.tensor([got[i][f"share:{k}"] for i in range(6)], dtype=torch.float64), want, atol=1e-5)
    for r in res.records:  # the three groups cover every key once
        assert r["share:doc"] + r["share:ans"] + r["share:other"] == pytest.approx(1.0, abs=1e-5)
        assert r["mdi:doc/ans"] == pytest.approx(r["aei:doc"] / r["aei:ans"], rel=1e-4)


def test_scan_cli_group_errors_and_output(tiny_folder, tmp_path):
    from headlab.cli import app

    tf = tmp_path / "texts.txt"
    tf.write_text("\n\n".join(TEXTS), encoding="utf-8")
    base = ["scan", "--model", str(tiny_folder), "--texts", str(tf), "--max-tokens", "64", "--quiet"]
    runner = CliRunner()
    r = runner.invoke(app, [*base, "--metrics", "sink", "--group", "doc=7-3", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "'7-3' ends before it starts" in r.output
    r = runner.invoke(app, [*base, "--metrics", "sink", "--group", "doc", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "--group 'doc' must look like NAME=SPEC" in r.output
    r = runner.invoke(app, [*base, "--metrics", "sink", "--group", "x=text:nowhere", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "--group x=text:nowhere matches no token of text #0" in r.output
    assert not (tmp_path / "a").exists()
    out = tmp_path / "b"
    r = runner.invoke(
        app,
        [
            *base,
            "--metrics",
            "waad,fai,magnet,global_sink",
            "--group",
            "doc=0-4",
            "--group",
            "q=last:3",
            "--json",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    heads = json.loads((out / "heads.json").read_text())
    for key in ("waad", "fai", "magnet", "global_sink", "share:doc", "aei:q", "mdi:doc/q"):
        assert all(h[key] is not None for h in heads), key
    assert "share:doc" in (out / "heads.csv").read_text().splitlines()[0]


def test_scan_shards_add_up_with_groups_and_new_metrics(tiny_folder):
    from headlab.measure.scan import finish_scan, scan_part
    from headlab.measure.shard import merge_parts

    m, tok = _load(tiny_folder)
    groups = ["ans=text:Answer", "rest=rest"]
    metrics = ["waad", "fai", "global_sink"]
    whole = finish_scan(scan_part(m, tok, "tiny", TEXTS, metrics, max_tokens=64, groups=groups))
    parts = [scan_part(m, tok, "tiny", TEXTS, metrics, max_tokens=64, groups=groups, shard=f"{i}/2") for i in (1, 2)]
    merged = finish_scan(merge_parts(parts))
    for a, b in zip(whole.records, merged.records, strict=True):
        for k in ("waad", "fai", "global_sink", "share:ans", "aei:ans", "mdi:ans/rest"):
            assert a[k] == pytest.approx(b[k], abs=1e-6), k


# ------------------------------------------------------------------ dilution curve and CARVE contrast
def test_dilution_curve(tiny_folder, tmp_path):
    from headlab.measure.dilution import dilution_curve, dilution_png

    m, tok = _load(tiny_folder)
    doc = " ".join(f"w{i % 90}" for i in range(80))
    rows = dilution_curve(m, tok, doc, "w95 w96 w97", [4, 16, 64])
    assert [r["n_doc"] for r in rows] == [4, 16, 64]
    for r in rows:
        assert r["share_doc"] + r["share_tail"] == pytest.approx(1.0, abs=1e-5)  # no prefix: two groups cover all
        assert r["share_per_doc_token"] == pytest.approx(r["share_doc"] / r["n_doc"])
        assert len(r["share_doc_by_layer"]) == 2
    # the tail's queries see more document tokens as it grows: the document's share rises, per token it falls
    assert rows[-1]["share_doc"] > rows[0]["share_doc"]
    assert rows[-1]["share_per_doc_token"] < rows[0]["share_per_doc_token"]
    png = dilution_png(tmp_path / "d.png", rows)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="sizes must lie in 1..80"):
        dilution_curve(m, tok, doc, "w95", [100])
    with pytest.raises(ValueError, match="tail is empty"):
        dilution_curve(m, tok, doc, "", [4])


def test_contrast_matches_eager_maps(tiny_folder, tmp_path):
    from headlab.measure.contrast import contrast, contrast_png

    m, tok = _load(tiny_folder)
    ctxt = " ".join(f"w{i}" for i in range(1, 40))
    c = contrast(m, tok, ctxt, "w50 w51 w52", "w60 w61", layers=[1])
    maps = []
    for q in ("w50 w51 w52", "w60 w61"):
        ids = torch.tensor(
            [tok(ctxt, add_special_tokens=False)["input_ids"] + tok("\n\n" + q, add_special_tokens=False)["input_ids"]]
        )
        atts = _eager(m, ids, torch.ones_like(ids))
        a = torch.stack([x[0, :, -1, 1:39].mean(0) for x in atts])  # (L, 38): head mean, first token left out
        maps.append(a / a.sum(-1, keepdim=True))
    aq, ag = maps
    assert c.contrast.shape == (2, 38) and len(c.tokens) == 38 and c.tokens[0] == "w2"
    assert c.lam == pytest.approx(1 / 38)
    assert torch.allclose(c.contrast.double(), aq / (ag + 1 / 38), atol=1e-5)
    assert torch.allclose(c.difference.double(), aq - ag, atol=1e-6)
    assert torch.allclose(c.entropy_task.double(), -(aq * aq.log()).sum(-1), atol=1e-5)
    assert torch.allclose(c.fused, c.contrast[1])
    assert c.top(3)[0][2] == pytest.approx(float(c.contrast[1].max()))
    assert contrast_png(tmp_path / "c.png", c).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"layers \[5\] out of range: valid layers are 0..1"):
        contrast(m, tok, ctxt, "w50", layers=[5])


def test_contrast_cli(tiny_folder, tmp_path):
    from headlab.cli import app

    runner = CliRunner()
    ctxt = " ".join(f"w{i}" for i in range(1, 30))
    out = tmp_path / "c"
    r = runner.invoke(
        app,
        [
            "contrast",
            "--model",
            str(tiny_folder),
            "--context",
            ctxt,
            "--task",
            "w50 w51",
            "--general",
            "w60",
            "--json",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert len(got["top"]) == 10 and (out / "contrast.png").exists()
    saved = json.loads((out / "contrast.json").read_text())
    assert len(saved["entropy_task"]) == 2 and len(saved["fused"]) == 28
    r = runner.invoke(app, ["contrast", "--model", str(tiny_folder), "--task", "w5", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "exactly one of --context" in r.output


# ------------------------------------------------------------------ the real model, one short text
@pytest.mark.model
def test_scan_new_metrics_on_smollm2(smollm2, tmp_path):
    from headlab.measure.scan import run_scan

    model, tok = smollm2
    text = (
        "The old lighthouse keeper climbed the stairs every evening. He lit the lamp, wrote the weather in "
        "his log, and watched the ships pass. Question: what did the keeper write in his log? Answer:"
    )
    res = run_scan(
        model,
        tok,
        "smollm2-135m",
        [text],
        ["sink", "distance", "waad", "fai", "magnet", "global_sink"],
        max_tokens=128,
        head_maps=0,
        groups=["question=text:Question", "story=rest"],
        out=tmp_path / "scan",
    )
    recs = res.records
    assert len(recs) == 30 * 9
    for r in recs:
        assert 0 <= r["waad"] <= 10 + 1e-4 and r["waad"] <= r["distance"] + 1e-4  # clipped distance
        assert 0 <= r["magnet"] <= 1 and 0 <= r["global_sink"] <= 1 + 1e-5 and r["fai"] >= 0
    # SmolLM2 has no BOS: its first token is the usual global sink; deep layers find it
    deep = [r for r in recs if r["layer"] >= 15]
    assert sum(r["global_sink"] >= r["sink"] - 1e-5 for r in deep) == len(deep)
    assert (tmp_path / "scan" / "atlas.png").exists()
