"""``scan --importance``: the atlas's importance columns equal headlab.measure.importance's direct output."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import save_tiny_llama

from headlab.measure.importance import head_importance
from headlab.measure.scan import pad_batch, run_scan, scan_part, tokenize_texts

TEXTS = [
    " ".join(f"w{(7 * i + 3) % 97}" for i in range(23)),
    " ".join(f"w{(5 * i + 1) % 89}" for i in range(40)),
    " ".join(f"w{(3 * i + 2) % 61}" for i in range(9)),
]


@pytest.fixture
def tiny(tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = save_tiny_llama(tmp_path / "tiny")
    return LlamaForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_importance_columns_equal_direct_output(tiny, tmp_path):
    model, tok = tiny
    res = run_scan(model, tok, "tiny", TEXTS, ["entropy"], max_tokens=64, out=tmp_path / "scan", head_maps=0, importance=True)
    ids = tokenize_texts(tok, TEXTS, 64, None)
    x, mask = pad_batch(ids)
    direct = head_importance(model, x, mask)
    assert res.meta["metrics"] == ["entropy", "importance_kl", "importance_taylor"]
    for r in res.records:
        assert r["importance_kl"] == pytest.approx(float(direct.kl[r["layer"], r["head"]]), abs=1e-6)
        assert r["importance_taylor"] == pytest.approx(float(direct.taylor[r["layer"], r["head"]]), abs=1e-6)
        assert r["entropy"] is not None
    assert torch.allclose(res.stats["importance_kl"], direct.kl)
    summary = res.meta["importance"]
    assert summary["spearman_kl_vs_abs_taylor"] == pytest.approx(direct.spearman_kl_taylor, abs=1e-12)
    assert summary["tokens"] == sum(int(t.shape[1]) for t in ids)
    meta = json.loads((tmp_path / "scan" / "meta.json").read_text())
    assert meta["importance"]["spearman_kl_vs_abs_taylor"] == pytest.approx(direct.spearman_kl_taylor)
    assert "mean-ablated" in meta["formulas"]["importance_kl"]
    header = (tmp_path / "scan" / "heads.csv").read_text().splitlines()[0].split(",")
    assert header == ["layer", "head", "entropy", "importance_kl", "importance_taylor", "roles"]
    # without --importance: no columns, no summary
    plain = run_scan(model, tok, "tiny", TEXTS, ["entropy"], max_tokens=64, head_maps=0)
    assert "importance_kl" not in plain.records[0] and plain.meta["importance"] is None


def test_importance_bad_input(tiny):
    from headlab.edits import ablate

    model, tok = tiny
    with pytest.raises(ValueError, match="--shard"):
        scan_part(model, tok, "tiny", TEXTS, ["entropy"], max_tokens=64, shard=(1, 2), importance=True)
    with pytest.raises(ValueError, match="--edits"):
        scan_part(model, tok, "tiny", TEXTS, ["entropy"], max_tokens=64, edits=[ablate("L0H1")], importance=True)
