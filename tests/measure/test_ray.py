"""``headlab scan --ray``: texts fanned out over a local 2-CPU Ray, states merged == the single-process
scan; a Ray address that does not answer is named within a bounded time."""

from __future__ import annotations

import functools
import json
import socket
import time

import pytest
import torch
from conftest import save_tiny_llama
from test_shard import QUERY, _texts
from typer.testing import CliRunner

from headlab.cli import app
from headlab.measure.distributed import check_address, connect
from headlab.measure.scan import run_scan
from headlab.models import load

ray = pytest.importorskip("ray", reason="needs ray: .venv/bin/pip install 'ray>=2.9' (or pip install 'headlab[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unanswering_address_is_named_quickly():
    port = _free_port()  # nothing listens there
    t0 = time.time()
    with pytest.raises(ValueError, match=f"127.0.0.1:{port}.*does not answer"):
        check_address(f"127.0.0.1:{port}", timeout=2.0)
    with pytest.raises(ValueError, match="does not answer"):
        check_address(f"ray://127.0.0.1:{port}", timeout=2.0)
    assert time.time() - t0 < 10
    with pytest.raises(ValueError, match="'nonsense'"):
        check_address("nonsense")


@pytest.mark.slow
def test_ray_scan_equals_single_process(local_ray, tmp_path):
    from headlab.measure.distributed import ray_scan

    folder = save_tiny_llama(tmp_path / "tiny")
    texts = _texts(5)
    m, tok = load(str(folder))
    metrics = [*QUERY, "induction"]
    whole = run_scan(m, tok, str(folder), texts, metrics, max_tokens=64, head_maps=0)
    part = ray_scan(functools.partial(load), str(folder), texts, metrics, max_tokens=64)
    assert connect() is local_ray and part.meta["shard"] == [1, 1] and len(part.texts) == 5
    stats = part.stats()
    for k in metrics:
        assert torch.allclose(stats[k].double(), whole.stats[k].double(), atol=1e-6, rtol=0), k
    # the CLI: --ray joins the Ray this process runs; same heads.json as a plain scan
    tf = tmp_path / "texts.txt"
    tf.write_text("\n\n".join(texts))
    base = [
        "scan",
        "--model",
        str(folder),
        "--texts",
        str(tf),
        "--metrics",
        "sink,entropy,prev_token",
        "--max-tokens",
        "64",
        "-q",
    ]
    r1 = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "plain")])
    r2 = CliRunner().invoke(app, [*base, "--ray", "--batch-size", "2", "--out", str(tmp_path / "ray")])
    assert r1.exit_code == 0 and r2.exit_code == 0, (r1.output, r2.output)
    a = json.loads((tmp_path / "plain" / "heads.json").read_text())
    b = json.loads((tmp_path / "ray" / "heads.json").read_text())
    for ra, rb in zip(a, b, strict=True):
        for k in ("sink", "entropy", "prev_token"):
            assert ra[k] == pytest.approx(rb[k], abs=1e-6)


def test_cli_ray_address_that_does_not_answer(tmp_path):
    port = _free_port()
    r = CliRunner().invoke(
        app,
        ["scan", "--model", "nowhere", "--ray-address", f"127.0.0.1:{port}", "--metrics", "sink", "--out", str(tmp_path / "rep")],
    )
    assert r.exit_code == 2 and f"127.0.0.1:{port}" in r.output, r.output
    assert not (tmp_path / "rep").exists()
