"""Interop: a headlab plan as a kvpress press (``interop/press.py``: the pure part here, the real press in
kvpress's venv when it exists) and DuoAttention's head-pattern format to and from headlab plans."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import llama

import headlab
from headlab.patterns.headplan import load_plan, plan_from_entries
from headlab.sparsify.interop import (
    PRESS_FILE,
    HeadPlanPress,
    full_heads,
    kept_range,
    plan_from_duo,
    press_spec,
    read_duo_pattern,
    write_duo_pattern,
    write_press,
)

KVPRESS_PY = Path(__file__).resolve().parents[2] / "build" / "kvpress-venv" / "bin" / "python"
FULL = {"pattern": "causal", "args": {}}


def _sw(sink, size):
    return {"pattern": "sink_window", "args": {"sink": sink, "size": size}}


def _model():
    return llama(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3, max_position_embeddings=512)


def _plan(model, window=24):
    rows = [
        [FULL, _sw(4, window)],
        [_sw(2, window + 8), FULL],
        [{"pattern": "moa", "args": {"spans": [[8, 0.25]], "sink": 3}}, _sw(4, window)],
    ]
    return plan_from_entries(rows, model, length=256, method="duo", budget=0.5)


def test_press_keeps_what_the_headlab_cache_keeps():
    """After a dense prefill the press's kept keys per (layer, KV head) equal headlab's compressed cache's."""
    model = _model()
    plan = _plan(model)
    ids = torch.randint(0, 101, (1, 150), generator=torch.Generator().manual_seed(0))
    cache = headlab.kv_cache(model, plan, prefill="dense")
    with torch.no_grad(), headlab.attach(model, pattern=plan):
        model(input_ids=ids, cache=cache, use_cache=True)
    press = HeadPlanPress(spec=press_spec(plan))
    kept = [(~press.masked(layer, 2, 150)).sum(-1).tolist() for layer in range(3)]
    assert kept == cache.kept()
    assert kept[0] == [150, 4 + 24] and kept[2][0] == 3 + round(8 + 0.25 * 150)


def test_compress_marks_the_evicted_keys():
    model = _model()
    press = HeadPlanPress.from_spec(press_spec(_plan(model)))
    keys = torch.randn(2, 2, 100, 16)  # (B, Hkv, n, d)
    module = SimpleNamespace(layer_idx=0)
    k, v = press.compress(module, None, keys, keys, None, {})
    assert k is keys and v is keys  # nothing removed: masked, as kvpress's head-wise presses do
    b, h, pos = module.masked_key_indices
    assert set(h.tolist()) == {1} and b.tolist().count(0) == b.tolist().count(1) == 100 - 28
    assert pos.min().item() == 4 and pos.max().item() == 100 - 24 - 1
    assert press.kept_fraction_ == pytest.approx((100 + 28) / 200)
    with pytest.raises(ValueError, match="has 3 KV heads, the press spec 2"):
        press.masked(0, 3, 10)


def test_spec_validation_and_files(tmp_path):
    model = _model()
    path = write_press(_plan(model), tmp_path, name="duo")
    spec = json.loads(path.read_text())
    assert spec["heads"][0][0] is None and spec["heads"][0][1] == {"sink": 4, "bands": [[24.0, 0.0]]}
    assert (tmp_path / "headlab_press.py").read_bytes() == PRESS_FILE.read_bytes()
    assert kept_range(None, 10) == (10, 10) and kept_range(spec["heads"][0][1], 10) == (4, 4)
    bad = {**spec, "heads": spec["heads"][:1]}
    with pytest.raises(ValueError, match="n_layers=3 lists"):
        HeadPlanPress(spec=bad)
    with pytest.raises(ValueError, match="format"):
        HeadPlanPress(spec={"format": "x"})


def test_press_file_imports_without_headlab():
    """press.py must stay importable by path in a venv without headlab (only torch, and kvpress if present)."""
    text = PRESS_FILE.read_text()
    imports = [ln.split()[1] for ln in text.splitlines() if ln.startswith(("import ", "from "))]
    assert all(m.split(".")[0] in ("__future__", "json", "dataclasses", "pathlib", "kvpress", "torch") for m in imports), imports
    code = f"import importlib.util as u; s = u.spec_from_file_location('p', {str(PRESS_FILE)!r}); m = u.module_from_spec(s); s.loader.exec_module(m); print(m.FORMAT)"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "headlab-press/1"


# ---------------------------------------------------------------------------------------------- DuoAttention
def _pattern(tmp_path, alphas, sink=4, recent=16):
    tmp_path.mkdir(parents=True, exist_ok=True)
    np.savetxt(tmp_path / "full_attention_heads.tsv", np.asarray(alphas), delimiter="\t")
    (tmp_path / "config.json").write_text(json.dumps({"sink_size": sink, "recent_size": recent}))
    return tmp_path


def test_duo_import_follows_duoattention_rule(tmp_path):
    model = _model()
    alphas = [[0.9, 0.1], [0.05, 0.6], [0.3, 1.4]]  # 1.4 is clipped to 1
    folder = _pattern(tmp_path / "p", alphas)
    plan = plan_from_duo(folder, model, sparsity=0.5, length=256)
    a = np.clip(np.array(alphas), 0, 1)
    want = a >= np.quantile(a, 0.5)
    got = np.array([[e["pattern"] == "causal" for e in row] for row in plan.entries])
    assert (got == want).all() and got.sum() == 3
    assert {json.dumps(e) for row in plan.entries for e in row if e["pattern"] != "causal"} == {json.dumps(_sw(4, 16))}
    assert plan.meta["method"] == "duo-import" and plan.meta["scores"][2][1] == 1.0
    assert full_heads(a, sparsity=1.0).sum() == 0 and full_heads(a, sparsity=0.0).all()
    assert (full_heads(a, threshold=0.5) == (a >= 0.5)).all()
    # the way back: the same gates and spans
    back = write_duo_pattern(plan, tmp_path / "back")
    b, s, r = read_duo_pattern(back)
    assert np.allclose(b, a, atol=1e-6) and (s, r) == (4, 16)
    again = plan_from_duo(back, model, sparsity=0.5, length=256)
    assert again.entries == plan.entries


def test_duo_import_errors(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="3 layers x 2 KV heads"):
        plan_from_duo(_pattern(tmp_path / "a", [[0.1, 0.2, 0.3]]), model, sparsity=0.5)
    with pytest.raises(ValueError, match="exactly one of sparsity"):
        plan_from_duo(_pattern(tmp_path / "b", [[0.1, 0.2]] * 3), model, sparsity=0.5, threshold=0.2)
    np.save(tmp_path / "g.npy", np.ones((3, 2)))
    with pytest.raises(ValueError, match="no config.json"):
        read_duo_pattern(tmp_path / "g.npy")
    assert read_duo_pattern(tmp_path / "g.npy", sink=1, recent=8)[1:] == (1, 8)
    with pytest.raises(ValueError, match="no DuoAttention pattern"):
        read_duo_pattern(tmp_path / "missing")


def test_shipped_duo_plan_exports():
    plan = load_plan("smollm2-135m-4k")
    spec = press_spec(plan)
    assert spec["n_layers"] == 30 and spec["n_kv_heads"] == 3
    full = sum(e is None for row in spec["heads"] for e in row)
    assert full == sum(len(r) for r in plan.full_heads())


# ---------------------------------------------------------------------------------------------- in kvpress's venv
_CHILD = r"""
import importlib.util, json, sys, torch
from transformers import AutoModelForCausalLM, DynamicCache
folder, press_file, spec_file, n_ctx = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = importlib.util.spec_from_file_location("hp", press_file); m = importlib.util.module_from_spec(s); s.loader.exec_module(m)
import kvpress  # noqa: F401  (patches attention for head-wise masks)
assert issubclass(m.HeadPlanPress, kvpress.presses.base_press.BasePress)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
ids = torch.tensor([json.loads(sys.argv[5])])
press = m.HeadPlanPress.from_spec(spec_file)
cache = DynamicCache()
with torch.no_grad():
    with press(model):
        model.model(input_ids=ids[:, :n_ctx], past_key_values=cache)
    out = model(input_ids=ids[:, n_ctx:n_ctx + 1], past_key_values=cache)
print(json.dumps({"logits": out.logits[0, -1].tolist(), "kept": press.kept_fraction_}))
"""


@pytest.mark.skipif(
    not KVPRESS_PY.exists(), reason=f"kvpress venv missing at {KVPRESS_PY} (make it: bash scripts/kvpress_env.sh)"
)
def test_press_in_kvpress_matches_headlab_dense_prefill(tmp_path):
    """The press in kvpress's own pipeline == headlab's dense-prefill cache at the first decode step. A press never
    evicts while decoding, so its first step sees [0, sink) + the last w context keys + the new token: headlab's
    cache with windows w + 1."""
    model = llama(
        architectures=["LlamaForCausalLM"],
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=3,
        max_position_embeddings=512,
    )
    model.save_pretrained(tmp_path / "m")
    ids = torch.randint(0, 101, (1, 121), generator=torch.Generator().manual_seed(3))
    n_ctx = 120
    spec = write_press(_plan(model, window=24), tmp_path, name="p")
    rows = [[FULL, _sw(4, 25)], [_sw(2, 33), FULL], [{"pattern": "moa", "args": {"spans": [[9, 0.25]], "sink": 3}}, _sw(4, 25)]]
    wider = plan_from_entries(rows, model, length=256)
    cache = headlab.kv_cache(model, wider, prefill="dense")
    with torch.no_grad(), headlab.attach(model, pattern=wider):
        model(input_ids=ids[:, :n_ctx], position_ids=torch.arange(n_ctx)[None], cache=cache, use_cache=True)
        ref = model(input_ids=ids[:, n_ctx:], position_ids=torch.tensor([[n_ctx]]), cache=cache, use_cache=True).logits[0, -1]
    proc = subprocess.run(
        [
            str(KVPRESS_PY),
            "-c",
            _CHILD,
            str(tmp_path / "m"),
            str(tmp_path / "headlab_press.py"),
            str(spec),
            str(n_ctx),
            json.dumps(ids[0].tolist()),
        ],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (torch.tensor(got["logits"]) - ref).abs().max().item() < 1e-4
    assert got["kept"] < 1
