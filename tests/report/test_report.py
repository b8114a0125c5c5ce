"""HTML head atlas report: the streaming head-map probe, encodings, escaping and the size budget."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch
from conftest import llama

from headlab.engine.context import AttnContext
from headlab.measure.maps import write_html_report
from headlab.probes.head_map import HeadMap, HeadMapProbe, downsample_reference
from headlab.report.data import decode_map, encode_map, load_scan, map_bytes, pack, unpack
from headlab.report.html import DEFAULT_MAX_BYTES, build_payload, render_page
from headlab.report.maps import TextMaps, plan_maps, priority_heads
from headlab.report.synthetic import feed, write_synthetic_scan


def _causal_attention(B, H, T, S, seed=0, key_pos=None):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, H, T, S, generator=g) * 2
    i = torch.arange(T)[:, None] + (S - T)
    j = torch.arange(S)[None, :]
    mask = (j <= i)[None, None].expand(B, H, T, S).clone()
    if key_pos is not None:
        mask &= (key_pos >= 0)[:, None, None, :]
    return torch.nan_to_num(torch.softmax(s.masked_fill(~mask, float("-inf")), -1), nan=0.0)


@pytest.mark.parametrize("px,chunk", [(16, 10), (7, 63), (63, 5), (100, 17)])
def test_probe_matches_dense_downsampling(px, chunk):
    T, H = 63, 3
    a = _causal_attention(1, H, T, T, seed=px)
    probe = HeadMapProbe({1: [0, 2]}, px=px, topk=4, name="m")
    probe.reset(2, H)
    feed(probe, a, layer=1, n_layers=2, chunk=chunk)
    maps = probe.maps()
    assert sorted(maps) == [(1, 0), (1, 2)]
    r = min(T, px)
    for (_layer, h), hm in maps.items():
        assert hm.map.shape == (r, r) and hm.n_tokens == T
        ref = downsample_reference(a[0, h].double().numpy(), r, r)
        np.testing.assert_allclose(hm.map, ref, rtol=1e-5, atol=1e-7)
        w, j = torch.topk(a[0, h], 4, dim=-1)
        np.testing.assert_allclose(hm.topk_w, w.numpy(), rtol=1e-6)
        # ties are impossible with random scores, but compare the weights at the returned keys too
        np.testing.assert_array_equal(hm.topk_pos, j.numpy())
    res = probe.result()
    assert res[1, 0] == T and torch.isnan(res[0]).all() and torch.isnan(res[1, 1])


def test_probe_is_exact_at_short_inputs_and_rows_sum_to_one():
    a = _causal_attention(1, 3, 20, 20, seed=3)
    probe = HeadMapProbe("all", px=64)
    probe.reset(1, 3)
    feed(probe, a, layer=0, n_layers=1, chunk=6)
    for (_, h), hm in probe.maps().items():
        np.testing.assert_allclose(hm.map, a[0, h].numpy(), rtol=1e-6, atol=1e-8)
    # block means times block widths sum to one per row bin, also when downsampled
    probe = HeadMapProbe("all", px=6)
    probe.reset(1, 3)
    feed(probe, a, layer=0, n_layers=1)
    width = np.bincount(np.arange(20) * 6 // 20, minlength=6)
    for hm in probe.maps().values():
        np.testing.assert_allclose((hm.map * width[None]).sum(1), 1.0, rtol=1e-6)


def test_probe_left_padding_uses_token_positions():
    B, H, S, pad = 2, 3, 40, 7
    key_pos = torch.arange(S)[None].repeat(B, 1)
    key_pos[1] = torch.arange(S) - pad
    key_pos[1, :pad] = -1
    a = _causal_attention(B, H, S, S, seed=5, key_pos=key_pos)
    probe = HeadMapProbe("L0H1", px=9, topk=3, row=1)
    probe.reset(1, H)
    ctx = AttnContext(0, 1, H, H, True, key_pos, key_pos.clone())
    for t0 in range(0, S, 11):
        ctx.q_index = torch.arange(t0, min(S, t0 + 11))
        probe.update(a[:, :, ctx.q_index], ctx)
    hm = probe.maps()[(0, 1)]
    n = S - pad
    assert hm.n_tokens == n
    ref = downsample_reference(a[1, 1, pad:, pad:].double().numpy(), 9, 9)
    np.testing.assert_allclose(hm.map, ref, rtol=1e-5, atol=1e-7)
    assert hm.topk_pos.max() < n and hm.topk_pos.min() >= 0


def test_probe_bad_input():
    with pytest.raises(ValueError, match="px"):
        HeadMapProbe(px=0)
    with pytest.raises(ValueError, match="topk"):
        HeadMapProbe(topk=-1)
    probe = HeadMapProbe("all", px=8)
    probe.reset(1, 2)
    feed(probe, _causal_attention(1, 2, 10, 10), 0, 1)
    with pytest.raises(ValueError, match="one sequence per layer"):
        feed(probe, _causal_attention(1, 2, 12, 12), 0, 1)
    with pytest.raises(ValueError, match="valid heads are 0..1"):
        HeadMapProbe("L0H5").reset(1, 2)


def test_map_encoding_roundtrip():
    rng = np.random.default_rng(0)
    m = 10.0 ** rng.uniform(-4.9, 0, size=(13, 17))
    m[0, 0], m[1, 1], m[2, 2] = 0.0, np.nan, 1e-7
    back = decode_map(encode_map(m), 13, 17)
    ok = np.isfinite(m) & (m >= 1e-5)
    np.testing.assert_allclose(back[ok], m[ok], rtol=0.025)
    assert back[0, 0] == back[1, 1] == back[2, 2] == 0.0
    np.testing.assert_array_equal(decode_map(pack(encode_map(m), "gzip"), 13, 17, "gzip"), back)
    with pytest.raises(ValueError, match="encoding must be one of"):
        pack(encode_map(m), "zstd")


EVIL = ["The", " cat", " <script>alert(1)</script>", " \"q\" & 's'", "</script><img src=x onerror=alert(2)>", " &amp;", "\n"]


def test_page_escapes_token_text_and_names(tmp_path):
    tm = write_synthetic_scan(tmp_path, EVIL * 3, n_layers=2, n_heads=3)
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["model"] = "<b>model</b> & co"
    meta["command"] = "headlab scan --text '<script>alert(3)</script>'"
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    page = write_html_report(tmp_path, head_maps=[tm]).read_text(encoding="utf-8")
    assert page.lower().count("<script") == 2  # the JSON data block and the page's own script
    assert "alert(" not in page.split('<script type="application/json"')[0]
    data = re.search(r'<script type="application/json" id="headlab-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data and ">" not in data and "&" not in data
    payload = json.loads(data)
    assert payload["maps"]["texts"][0]["tokens"] == EVIL * 3
    assert payload["meta"]["model"] == "<b>model</b> & co"
    assert "<title>headlab atlas — &lt;b&gt;model&lt;/b&gt; &amp; co</title>" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network


def test_report_without_maps_and_atomic_write(tmp_path):
    write_synthetic_scan(tmp_path, ["a", "b", "c"], n_layers=2, n_heads=2, baseline=False)
    out = write_html_report(tmp_path)
    assert out == tmp_path / "index.html"
    payload = json.loads(re.search(r'id="headlab-data">(.*?)</script>', out.read_text(), re.S).group(1))
    assert payload["maps"] is None and "without a model" in payload["maps_note"]
    assert payload["baseline"] is None and len(payload["heads"]) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heads.json", "index.html", "meta.json"]


def test_load_scan_rejects_bad_folders(tmp_path):
    with pytest.raises(ValueError, match="heads.json is missing"):
        load_scan(tmp_path)
    write_synthetic_scan(tmp_path, ["a", "b"], n_layers=2, n_heads=2)
    heads = json.loads((tmp_path / "heads.json").read_text())
    heads[0]["head"] = 7
    (tmp_path / "heads.json").write_text(json.dumps(heads))
    with pytest.raises(ValueError, match="valid heads are 0..1"):
        load_scan(tmp_path)


def _smollm2_like_scan(tmp_path):
    write_synthetic_scan(tmp_path, ["x"] * 8, n_layers=30, n_heads=9)
    return load_scan(tmp_path)


def test_plan_rules(tmp_path):
    scan = _smollm2_like_scan(tmp_path)
    short = plan_maps(scan, 100, budget_bytes=8_000_000)
    assert len(short.detail) == 270 and not short.overview  # everything fits at 100 tokens
    long = plan_maps(scan, 2048, budget_bytes=8_000_000)
    assert 0 < len(long.detail) <= 24 and len(long.detail) + len(long.overview) == 270
    assert set(long.detail).isdisjoint(long.overview)
    assert long.detail == priority_heads(scan)[: len(long.detail)]
    chosen = plan_maps(scan, 2048, map_sites="L3H1,L5", budget_bytes=8_000_000)
    assert chosen.detail == [(3, 1)] + [(5, h) for h in range(9)] and len(chosen.overview) == 260
    assert plan_maps(scan, 2048, map_sites="none").detail == []
    with pytest.raises(ValueError, match="over the budget"):
        plan_maps(scan, 2048, map_sites="all", budget_bytes=8_000_000)
    with pytest.raises(ValueError, match="layer 40 out of range"):
        plan_maps(scan, 2048, map_sites="L40")
    # every role holder class comes early: the first heads cover all four synthetic roles
    roles = {r["roles"][0] for r in scan.heads if (r["layer"], r["head"]) in set(priority_heads(scan)[:4]) and r["roles"]}
    assert len(roles) >= 3


def test_size_budget_smollm2_shape_at_2048_tokens(tmp_path):
    """The planned maps for 30 x 9 heads at 2048 tokens, encoded, keep the page under the budget."""
    scan = _smollm2_like_scan(tmp_path)
    n = 2048
    plan = plan_maps(scan, n, budget_bytes=DEFAULT_MAX_BYTES - 500_000)
    rng = np.random.default_rng(0)

    def fake(l, h, px, k):
        r = min(n, px)
        m = rng.uniform(0, 1e-2, size=(r, r)).astype(np.float32)
        tp = rng.integers(0, n, size=(n, k)) if k else None
        tw = rng.uniform(0, 1, size=(n, k)).astype(np.float32) if k else None
        return HeadMap(l, h, m, n, tp, tw)

    tm = TextMaps(
        "haystack",
        [f" tok{i}" for i in range(n)],
        detail={s: fake(*s, plan.px, plan.topk) for s in plan.detail},
        overview={s: fake(*s, plan.overview_px, 0) for s in plan.overview},
    )
    page = render_page(build_payload(scan, [tm], [plan]))
    size = len(page.encode("utf-8"))
    assert size <= DEFAULT_MAX_BYTES, size
    est = sum(map_bytes(n, plan.px, plan.topk) for _ in plan.detail) + sum(
        map_bytes(n, plan.overview_px, 0) for _ in plan.overview
    )
    maps = build_payload(scan, [tm], [plan])["maps"]
    assert maps["encoding"] == "gzip"
    assert len(json.dumps(maps)) <= est  # the planner's size model (raw blobs) bounds the gzip page
    raw = {
        **maps,
        "texts": [
            {
                **t,
                "heads": {
                    k: {
                        **h,
                        **{f: base64.b64encode(unpack(h[f], "gzip")).decode() for f in ("map", "topk_pos", "topk_w") if f in h},
                    }
                    for k, h in t["heads"].items()
                },
            }
            for t in maps["texts"]
        ],
    }
    assert abs(len(json.dumps(raw)) - est) / est < 0.1  # and is accurate for raw blobs


class _CharTokenizer:
    """One token per printable ASCII character (id = code point - 32); enough for compute_text_maps."""

    def __call__(self, text, return_tensors=None):
        ids = [ord(c) - 32 for c in text]
        return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids}

    def decode(self, ids):
        return "".join(chr(i + 32) for i in ids)


def test_maps_from_a_tiny_model_match_full_eager_attention(tmp_path):
    model = llama(vocab_size=97, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    text = "The <b>cat</b> & the dog sat on the mat, twice: the cat & the dog."  # 66 characters
    write_synthetic_scan(tmp_path, list(text), n_layers=2, n_heads=4)  # meta.json: text0 of 66 tokens
    out = write_html_report(
        tmp_path, model=model, tokenizer=_CharTokenizer(), texts=[text], map_sites="L1H2,L0", max_map_px=16, overview_px=8, topk=3
    )
    payload = json.loads(re.search(r'id="headlab-data">(.*?)</script>', out.read_text(), re.S).group(1))
    t = payload["maps"]["texts"][0]
    assert t["n_tokens"] == len(text) and "".join(t["tokens"]) == text
    assert {k for k, v in t["heads"].items() if v["kind"] == "detail"} == {"L0H0", "L0H1", "L0H2", "L0H3", "L1H2"}
    ids = torch.tensor([_CharTokenizer()(text)["input_ids"]])
    model.set_attn_implementation("eager")
    with torch.inference_mode():
        full = model(input_ids=ids, output_attentions=True).attentions  # per layer (1, H, N, N)
    for key, layer, head in (("L1H2", 1, 2), ("L0H3", 0, 3), ("L1H0", 1, 0)):
        m = t["heads"][key]
        ref = downsample_reference(full[layer][0, head].double().numpy(), m["rows"], m["cols"])
        got = decode_map(m["map"], m["rows"], m["cols"], "gzip")
        ok = ref >= 1e-5
        np.testing.assert_allclose(got[ok], ref[ok], rtol=0.025)


def test_maps_of_a_bidirectional_encoder(tmp_path, tiny_bert):
    """Non-causal attention: the maps cover the upper triangle too and match BERT's own weights."""
    text = "bidirectional attention, all keys visible!"
    write_synthetic_scan(tmp_path, list(text), n_layers=2, n_heads=3)
    out = write_html_report(tmp_path, model=tiny_bert, tokenizer=_CharTokenizer(), texts=[text], max_map_px=16, topk=3)
    t = json.loads(re.search(r'id="headlab-data">(.*?)</script>', out.read_text(), re.S).group(1))["maps"]["texts"][0]
    tiny_bert.set_attn_implementation("eager")
    with torch.inference_mode():
        full = tiny_bert(input_ids=torch.tensor([_CharTokenizer()(text)["input_ids"]]), output_attentions=True).attentions
    m = t["heads"]["L1H2"]
    ref = downsample_reference(full[1][0, 2].double().numpy(), m["rows"], m["cols"])
    assert ref[0, -1] > 1e-3  # the first query sees the last keys
    np.testing.assert_allclose(decode_map(m["map"], m["rows"], m["cols"], "gzip"), ref, rtol=0.025)


def test_texts_are_cut_to_the_scanned_token_count(tmp_path):
    model = llama(
        None,
        vocab_size=97,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
    )
    write_synthetic_scan(tmp_path, ["a"] * 10, n_layers=1, n_heads=2)  # the scan kept 10 tokens
    out = write_html_report(tmp_path, model=model, tokenizer=_CharTokenizer(), texts=["abcdefghijklmnopqrstuvwxyz"], topk=2)
    t = json.loads(re.search(r'id="headlab-data">(.*?)</script>', out.read_text(), re.S).group(1))["maps"]["texts"][0]
    assert t["name"] == "sample" and t["tokens"] == list("abcdefghij")
    assert t["heads"]["L0H1"]["rows"] == 10 and t["heads"]["L0H1"]["kind"] == "detail"


@pytest.mark.model
def test_cli_report_recomputes_maps_for_smollm2(tmp_path):
    """`headlab report DIR` reloads the model named in meta.json and maps every head of a short text."""
    from typer.testing import CliRunner

    from headlab.cli import app

    text = "Alice gave Bob a book. Then Bob gave Alice a pen, and Alice said thanks to Bob for the pen."
    write_synthetic_scan(tmp_path, ["x"] * 5, n_layers=30, n_heads=9, model="smollm2-135m", baseline=False)
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["texts"] = [{"name": "alice", "n_tokens": 16}]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "texts.json").write_text(json.dumps([{"name": "alice", "text": text}]))
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--threads", "1"])
    assert res.exit_code == 0, res.output
    payload = json.loads(re.search(r'id="headlab-data">(.*?)</script>', (tmp_path / "index.html").read_text(), re.S).group(1))
    t = payload["maps"]["texts"][0]
    assert t["name"] == "alice" and t["n_tokens"] == 16 and "".join(t["tokens"]) == text[: len("".join(t["tokens"]))]
    assert len(t["heads"]) == 270 and all(v["kind"] == "detail" and v["rows"] == 16 for v in t["heads"].values())
    # late layers of SmolLM2 sink on the first token: the exact map's first column carries most weight
    m = t["heads"]["L20H0"]
    first_col = decode_map(m["map"], 16, 16, payload["maps"]["encoding"])[:, 0]
    assert first_col[1:].mean() > 0.2
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--no-maps"])
    assert res.exit_code == 0 and "without a model" in (tmp_path / "index.html").read_text()
