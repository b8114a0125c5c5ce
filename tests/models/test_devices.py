"""Devices and dtypes: ``load(name | folder | Hub id, device=, dtype=, device_map=)``, bad devices and
dtypes, accelerate device maps with ``attach``, bf16 statistics vs fp32, and the engine building every
tensor on the inputs' device (checked on the meta device, which mixes with no other)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import save_tiny_llama

import headlab  # noqa: F401
from headlab.engine.attend import attend
from headlab.measure.stats import head_stats
from headlab.models import load, resolve_device, resolve_dtype
from headlab.probes import make_probe
from headlab.probes.base import Probe, acc_dtype

METRICS = ("sink", "entropy", "prev_token", "distance")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _ids():
    return torch.randint(0, 101, (2, 40), generator=torch.Generator().manual_seed(0))


def test_load_folder_with_dtype_and_device(tiny_folder):
    m, tok = load(str(tiny_folder))
    assert next(m.parameters()).dtype == torch.float32 and m.device.type == "cpu" and not m.training
    assert tok("w1 w2")["input_ids"][-2:] == [1, 2]
    m16, _ = load(str(tiny_folder), dtype="bfloat16", device="cpu")
    assert {p.dtype for p in m16.parameters()} == {torch.bfloat16}
    mh, _ = load(str(tiny_folder), dtype=torch.float16)
    assert next(mh.parameters()).dtype == torch.float16


@pytest.mark.parametrize("device_map", ["auto", {"": "cpu"}, "split"])
def test_device_map_works_with_attach(tiny_folder, device_map):
    plain, _ = load(str(tiny_folder))
    if device_map == "split":  # one entry per module, as accelerate writes for layers on several devices
        device_map = {
            "model.embed_tokens": "cpu",
            "model.layers.0": "cpu",
            "model.layers.1": "cpu",
            "model.norm": "cpu",
            "model.rotary_emb": "cpu",
            "lm_head": "cpu",
        }
    mapped, _ = load(str(tiny_folder), device_map=device_map)
    assert {p.device.type for p in mapped.parameters()} == {"cpu"}
    want, got = head_stats(plain, _ids(), METRICS), head_stats(mapped, _ids(), METRICS)
    for m in METRICS:
        torch.testing.assert_close(got[m], want[m], atol=1e-6, rtol=1e-6)
    with (
        headlab.attach(mapped, probes=["sink"], pattern=headlab.patterns.make("sink_window", sink=1, size=4)) as run,
        torch.no_grad(),
    ):
        mapped.generate(_ids()[:1, :8], max_new_tokens=3, do_sample=False)
    assert run.stats()["sink"].shape == (2, 3)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"device": "cuda:7"}, "device 'cuda:7' does not exist"),
        ({"device": "tpu"}, "device 'tpu' is not a device"),
        ({"dtype": "int8"}, "dtype 'int8' is not one of"),
        ({"dtype": torch.int32}, "not a floating-point dtype"),
        ({"device": "cpu", "device_map": "auto"}, "not both"),
        ({"device_map": {"model.layers.0": "cuda:3"}}, r"device_map\['model.layers.0'\]: device 'cuda:3'"),
        ({"device_map": "everywhere"}, "device 'everywhere'"),
    ],
)
def test_bad_device_dtype_and_map_are_named(tiny_folder, kw, match):
    with pytest.raises(ValueError, match=match):
        load(str(tiny_folder), **kw)


def test_a_dtype_the_device_lacks(monkeypatch):
    # a CUDA device without bf16 (simulated: no accelerator here)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    dev = resolve_device("cuda")
    assert dev == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="dtype 'bfloat16' is not supported on device 'cuda:0'"):
        resolve_dtype("bfloat16", dev)
    with pytest.raises(ValueError, match="device 'cuda:1' does not exist"):
        resolve_device("cuda:1")


def test_hub_id_missing_offline_names_the_id(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"'headlab-tests/no-such-model'.*HF_HUB_OFFLINE.*download headlab-tests/no-such-model"):
        load("headlab-tests/no-such-model")


def test_hub_id_resolves_through_the_cache_offline(monkeypatch, tmp_path, tiny_folder):
    import shutil

    import huggingface_hub.constants as hc

    repo = tmp_path / "models--headlab-tests--tiny-llama"
    snap = repo / "snapshots" / "0123456789abcdef"
    shutil.copytree(tiny_folder, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    m, tok = load("headlab-tests/tiny-llama", dtype="bfloat16")
    assert next(m.parameters()).dtype == torch.bfloat16 and m.config.num_hidden_layers == 2


#: bf16 vs fp32 tolerance of the head metrics (docs/devices.md: measured on SmolLM2-135M at 1024 tokens,
#: max |diff| sink 0.011, prev_token 0.0012, entropy 1.4 %, distance 1.5 % of its mean)
BF16_TOL = {"sink": 0.02, "prev_token": 0.02, "entropy_rel": 0.02, "distance_of_mean": 0.02}


def _check_bf16(f32, b16):
    for m in ("sink", "prev_token"):
        assert float((b16[m] - f32[m]).abs().max()) < BF16_TOL[m], m
    assert float(((b16["entropy"] - f32["entropy"]) / f32["entropy"]).abs().max()) < BF16_TOL["entropy_rel"]
    assert float((b16["distance"] - f32["distance"]).abs().max()) < BF16_TOL["distance_of_mean"] * float(f32["distance"].mean())
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in b16.values())


def test_bf16_head_stats_within_tolerance_of_fp32(tiny_llama):
    """Statistics are computed in fp32 from bf16 q/k/v, so the gap is the model's own bf16 rounding."""
    import copy

    ids = torch.randint(0, 101, (2, 96), generator=torch.Generator().manual_seed(1))
    _check_bf16(head_stats(tiny_llama, ids, METRICS), head_stats(copy.deepcopy(tiny_llama).to(torch.bfloat16), ids, METRICS))


@pytest.mark.model
def test_bf16_head_stats_on_smollm2_within_tolerance():
    from headlab.data import prose

    m32, tok = load("smollm2-135m")
    m16, _ = load("smollm2-135m", dtype="bfloat16")
    ids = tok(" ".join(prose.texts(20)), return_tensors="pt")["input_ids"][:, :512]
    _check_bf16(head_stats(m32, ids, METRICS), head_stats(m16, ids, METRICS))


# ---------------------------------------------------------------- everything on the inputs' device


def test_probe_totals_follow_the_device_and_its_dtype():
    p = Probe()
    p.reset(2, 3)
    from headlab.engine.context import AttnContext

    kp = torch.arange(5, device="meta").expand(1, 5)
    ctx = AttnContext(1, 2, 3, 1, True, kp, kp)
    p.add(ctx, torch.rand(1, 3, 5, device="meta"), torch.ones(1, 5, dtype=torch.bool, device="meta"))
    assert p.total.device.type == "meta" and p.count.device.type == "meta" and p.total.dtype == torch.float64
    assert acc_dtype(torch.device("mps")) == torch.float32 and acc_dtype(torch.device("cuda")) == torch.float64


def test_probe_rows_from_another_device_move_to_the_totals():
    p = Probe()
    p.reset(2, 3)
    p.add_row(0, torch.ones(3), torch.ones(3))  # placed on CPU
    p.add_row(1, torch.full((3,), 2.0, dtype=torch.float32), torch.ones(3, dtype=torch.float32))
    assert p.result().tolist() == [[1.0] * 3, [2.0] * 3]


@pytest.mark.parametrize("variant", [{}, {"window": 3}, {"softcap": 2.0}, {"sinks": "zeros"}])
def test_engine_builds_every_tensor_on_the_inputs_device(variant):
    """On the meta device any tensor built elsewhere (CPU) would raise when mixed in."""
    q = torch.randn(2, 3, 9, 16, device="meta")
    k = torch.randn(2, 1, 9, 16, device="meta")
    v = torch.randn(2, 1, 9, 16, device="meta")
    kw = {"sinks": torch.zeros(3, device="meta")} if "sinks" in variant else variant
    mask = torch.ones(2, 1, 9, 9, dtype=torch.bool, device="meta")
    assert attend(q, k, v, **kw).device.type == "meta"
    probes = [make_probe(n) for n in METRICS]
    for p in probes:
        p.reset(1, 3)
    out = attend(q, k, v, attn_mask=mask, probes=probes, path="eager", **kw)
    assert out.device.type == "meta" and all(p.total.device.type == "meta" for p in probes)


def test_cli_names_a_bad_device(tmp_path):
    from typer.testing import CliRunner

    from headlab.cli import app

    res = CliRunner().invoke(app, ["scan", "--device", "cuda:7", "--n-texts", "1", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "cuda:7" in res.output
    res = CliRunner().invoke(app, ["scan", "--dtype", "int8", "--n-texts", "1", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "int8" in res.output
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_group_share_builds_its_tensors_on_the_device(monkeypatch):
    from headlab.engine.context import AttnContext
    from headlab.probes import GroupShareProbe

    isin = torch.isin

    def same_device_isin(a, b, *args, **kw):  # meta tolerates a CPU second argument here; CUDA does not
        assert a.device == b.device, f"torch.isin on {a.device} and {b.device}"
        return isin(a, b, *args, **kw)

    monkeypatch.setattr(torch, "isin", same_device_isin)
    p = GroupShareProbe({"doc": range(0, 4), "q": range(4, 9)}, queries=range(4, 9))
    p.reset(1, 3)
    kp = torch.arange(9, device="meta").expand(2, 9)
    ctx = AttnContext(0, 1, 3, 1, True, kp, kp)
    p.update(torch.rand(2, 3, 9, 9, device="meta"), ctx)
    assert p.total.device.type == "meta"
