"""Integration tests on the real embedded models (marked ``model``)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from formulas import METRICS, formulas_from_attentions

import headlab
from headlab.data import prose
from headlab.models import load

pytestmark = pytest.mark.model


def _prompt(tok, n=200):
    ids = tok(" ".join(prose.texts(12)), return_tensors="pt")["input_ids"][:, :n]
    assert ids.shape[1] == n
    return ids


def test_smollm2_shape_and_identity(smollm2):
    model, tok = smollm2
    assert headlab.engine.hf.model_shape(model) == (30, 9, 3)
    ids = _prompt(tok, 64)
    with torch.no_grad():
        ref = model(ids).logits
        with headlab.attach(model) as run:
            out = model(ids).logits
    assert run.calls == 30
    assert torch.equal(ref, out)


def test_smollm2_metrics_equal_eager_formulas(smollm2):
    model, tok = smollm2
    ids = _prompt(tok, 200)
    st = headlab.head_stats(model, ids, metrics=METRICS)
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            o = model(ids, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    want = formulas_from_attentions(o.attentions, torch.ones_like(ids))
    for m in METRICS:
        assert torch.allclose(st[m].double(), want[m], atol=1e-4), m


def test_smollm2_induction_heads_exist(smollm2):
    from headlab.measure.induction import induction_scores

    sc = induction_scores(smollm2[0], n=30, batch=2)
    assert sc.shape == (30, 9)
    assert float(sc.max()) > 0.3  # SmolLM2 has induction heads (L17-L18 here)
    assert float(sc[:2].max()) < 0.2  # but not in its first layers


def test_minilm_encoder_probes():
    model, tok = load("minilm")
    enc = tok(["A short sentence.", "A somewhat longer sentence about attention heads."], return_tensors="pt", padding=True)
    st = headlab.head_stats(
        model, enc["input_ids"], metrics=["sink", "entropy", "distance"], attention_mask=enc["attention_mask"]
    )
    assert st["sink"].shape == (6, 12)
    assert torch.isfinite(st["entropy"]).all()
    # bidirectional: distance is the mean |i - j| (signed distances would cancel)
    assert float(st["distance"].min()) > 0


def test_unknown_model_name():
    with pytest.raises(ValueError, match="known names are"):
        load("gpt-17")


def test_scan_cli_end_to_end(tmp_path, smollm2):
    texts = tmp_path / "t.txt"
    texts.write_text('First text about a lighthouse by the sea.\n\nSecond text, with <b>markup</b> & quotes ".\n')
    out = tmp_path / "rep"
    cfg = tmp_path / "edit.json"
    cfg.write_text(json.dumps([{"edit": "zerotuning", "sites": [[12, 3]], "params": {"gamma": {"L12H3": 3.0}, "span": [0, 1]}}]))
    env = dict(os.environ, HEADLAB_CACHE=os.environ.get("HEADLAB_CACHE", ""))
    env = {k: v for k, v in env.items() if v}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "headlab.cli",
            "scan",
            "--texts",
            str(texts),
            "--max-tokens",
            "32",
            "--metrics",
            "sink,entropy,prev_token,distance,induction",
            "--out",
            str(out),
            "--edits",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    recs = json.loads((out / "heads.json").read_text())
    assert len(recs) == 270
    assert set(recs[0]) == {"layer", "head", "sink", "entropy", "prev_token", "distance", "induction", "roles"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["texts"][0]["n_tokens"] > 3 and meta["n_kv_heads"] == 3
    assert (out / "atlas.png").stat().st_size > 10_000
    assert (out / "heads.csv").read_text().count("\n") == 271
    assert any("sink" in rec["roles"] for rec in recs)
    base = json.loads((out / "baseline.json").read_text())
    changed = {(a["layer"], a["head"]) for a, b in zip(recs, base) if abs(a["sink"] - b["sink"]) > 1e-4}
    assert (12, 3) in changed and all(layer >= 12 for layer, _ in changed)  # the edit acts at L12H3 and downstream only
    assert json.loads((out / "texts.json").read_text())[0]["text"].startswith("First text")


def test_scan_failure_leaves_nothing(tmp_path):
    out = tmp_path / "rep"
    r = subprocess.run(
        [sys.executable, "-m", "headlab.cli", "scan", "--max-tokens", "99999", "--metrics", "sink", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2
    assert "valid values are 2..8192" in r.stderr
    assert not out.exists() or not any(out.iterdir())
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    r = subprocess.run(
        [sys.executable, "-m", "headlab.cli", "scan", "--texts", str(empty), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2 and "is empty" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "headlab.cli", "scan", "--metrics", "sink,bogus", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2 and "bogus" in r.stderr
    assert not out.exists() or not any(out.iterdir())
