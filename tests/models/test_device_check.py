"""scripts/device_check.py: the CPU fallback (tiny random Llama, short lengths) runs in CI, writes one
JSON with the three checks, and a failed check is reported (exit 1), not hidden."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "device_check.py"


@pytest.fixture(scope="module")
def device_check():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_fallback_writes_one_json(device_check, tmp_path):
    out = tmp_path / "dc.json"
    t0 = time.time()
    rc = device_check.main(["--cpu", "--out", str(out)])
    assert time.time() - t0 < 30
    res = json.loads(out.read_text())
    assert rc == 0 and res["ok"] and res["mode"] == "cpu-fallback"
    assert set(res["head_stats"]["compare"]) == {"sink", "entropy", "prev_token", "distance"}
    assert all(
        c["tolerance"]
        == device_check.BF16_TOL[
            k if k in ("sink", "prev_token") else {"entropy": "entropy_rel", "distance": "distance_of_mean"}[k]
        ]
        for k, c in res["head_stats"]["compare"].items()
    )
    assert res["generate"]["same_tokens"] and res["generate"]["attention_calls"] > 0
    assert res["window"]["max_abs_diff"] < 1e-4 and res["window"]["tokens"] == 256


def test_compare_stats_flags_a_gap(device_check):
    f32 = {m: torch.full((2, 3), 1.0) for m in device_check.METRICS}
    b16 = {m: v.clone() for m, v in f32.items()}
    b16["sink"][1, 2] += 0.05  # beyond the 0.02 tolerance
    b16["entropy"][0, 0] *= 1.01  # within 2 %
    got = device_check.compare_stats(f32, b16)
    assert not got["sink"]["ok"] and got["sink"]["max_abs_diff"] == pytest.approx(0.05, abs=1e-6)
    assert got["entropy"]["ok"] and got["prev_token"]["ok"] and got["distance"]["ok"]


def test_bad_lengths_are_named(device_check, tmp_path):
    with pytest.raises(SystemExit):
        device_check.main(["--cpu", "--length", "3", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()
