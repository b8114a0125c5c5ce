"""``headlab bench neighborhood`` (Faster Neighborhood Attention, arXiv 2403.04690; HaloNet, arXiv 2103.12731): the
naive path's neighbour index equals NATTEN's mask rule, naive and fused outputs agree, HaloNet's blocked attention
equals the halo2d pattern's dense reference, the run folder, the CLI's bad input and the registered timing claims'
rules."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from headlab.bench import neighborhood as nb
from headlab.bench.halo import halo_blocked
from headlab.cli import app
from headlab.kernels import reference_sparse_attend
from headlab.patterns.halo import halo2d
from headlab.patterns.neighborhood import neighborhood, neighborhood2d

torch.set_num_threads(1)


def _as_mask(index: torch.Tensor, n: int) -> torch.Tensor:
    m = torch.zeros(n, n, dtype=torch.bool)
    m[torch.arange(n)[:, None], index] = True
    return m


@pytest.mark.parametrize("n,kernel,dilation", [(40, 7, 1), (41, 6, 3), (16, 16, 1), (33, 5, 2)])
def test_1d_index_is_the_natten_rule(n, kernel, dilation):
    idx = nb.neighbor_index_1d(n, kernel, dilation)
    assert idx.shape == (n, kernel)
    assert torch.equal(_as_mask(idx, n), neighborhood(kernel, dilation).mask(n, n)[0])


def test_2d_index_is_the_natten_rule():
    idx = nb.neighbor_index_2d(9, 11, 5)
    assert idx.shape == (99, 25)
    assert torch.equal(_as_mask(idx, 99), neighborhood2d(9, 11, 5).mask(99, 99)[0])


def test_bad_index_sizes():
    with pytest.raises(ValueError, match="kernel\\*dilation <= n=8"):
        nb.neighbor_index_1d(8, 5, 2)
    with pytest.raises(ValueError, match="index must be"):
        nb.naive_na(*(torch.zeros(1, 1, 4, 2) for _ in range(3)), torch.zeros(3, 2, dtype=torch.long))


def test_naive_equals_the_dense_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, 8, generator=g) for _ in range(3))
    ref = reference_sparse_attend(q, k, v, neighborhood(9), causal=False)
    assert torch.allclose(nb.naive_na(q, k, v, nb.neighbor_index_1d(64, 9)), ref, atol=1e-5)


@pytest.mark.parametrize("height,width,block,halo", [(8, 12, 4, 1), (6, 6, 2, 0), (8, 8, 4, 3), (4, 8, 4, 2)])
def test_halo_blocked_equals_the_dense_reference(height, width, block, halo):
    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(2, 3, height * width, 5, generator=g) for _ in range(2))
    v = torch.randn(2, 3, height * width, 7, generator=g)
    ref = reference_sparse_attend(q, k, v, halo2d(height, width, block, halo), causal=False)
    assert torch.allclose(halo_blocked(q, k, v, height, width, block, halo), ref, atol=1e-5)


def test_halo_blocked_bad_sizes():
    x = torch.zeros(1, 1, 48, 4)
    with pytest.raises(ValueError, match="block=5"):
        halo_blocked(x, x, x, 6, 8, 5, 1)
    with pytest.raises(ValueError, match="height\\*width = T=48"):
        halo_blocked(x, x, x, 6, 6, 2, 1)


def test_run_write_and_table(tmp_path):
    res = nb.run([64], 7, [8], 3, repeats=2, threads=1, heads=2, dim=8, log=lambda *_: None)
    assert set(res["lengths"]) == {"1d@64", "2d@8x8"}
    for r in res["lengths"].values():
        assert r["max_abs_diff"] < 1e-5 and len(r["pair_ratios"]) == 2 and len(r["samples"]) == 4
    out = nb.write(res, tmp_path / "o", "headlab bench neighborhood ...")
    assert {p.name for p in out.iterdir()} == {"neighborhood.json", "neighborhood.records.jsonl", "table.md", "neighborhood.png"}
    assert "naive / fused" in (out / "table.md").read_text()
    with pytest.raises(ValueError, match="shorter than the kernel"):
        nb.run([4], 7, [], 3, repeats=1, threads=1)
    res = nb.run([], 7, [8], 3, repeats=2, threads=1, heads=2, dim=8, halo=(4, 1), log=lambda *_: None)
    h = res["lengths"]["2d@8x8"]["halo"]
    assert h["keys_per_query"] == 36 and len(h["pair_ratios"]) == 2 and res["config"]["halo"] == [4, 1]
    assert "HaloNet blocked" in nb.table(res)
    with pytest.raises(ValueError, match="divide the grid side 8"):
        nb.run([], 7, [8], 3, repeats=1, threads=1, halo=(3, 1))


def test_cli_runs_and_refuses_bad_input(tmp_path):
    runner = CliRunner()
    out = tmp_path / "nb"
    r = runner.invoke(
        app,
        [
            "bench",
            "neighborhood",
            "--lengths",
            "64",
            "--kernel",
            "7",
            "--grids",
            "8",
            "--kernel2d",
            "3",
            "--heads",
            "2",
            "--dim",
            "8",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads((out / "neighborhood.json").read_text())
    assert data["command"].startswith("headlab bench neighborhood --lengths 64 --kernel 7 --grids 8")
    r = runner.invoke(app, ["bench", "neighborhood", "--lengths", "", "--grids", "", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "--lengths or --grids" in r.output
    r = runner.invoke(
        app, ["bench", "neighborhood", "--lengths", "64", "--kernel", "0", "--grids", "", "--out", str(tmp_path / "y")]
    )
    assert r.exit_code != 0 and "--kernel must be >= 1" in r.output
    r = runner.invoke(
        app, ["bench", "neighborhood", "--lengths", "64", "--grids", "", "--halo", "4,1", "--out", str(tmp_path / "z")]
    )
    assert r.exit_code != 0 and "give --grids" in r.output
    r = runner.invoke(app, ["bench", "neighborhood", "--grids", "8", "--halo", "4", "--out", str(tmp_path / "w")])
    assert r.exit_code != 0 and "BLOCK,HALO" in r.output


def test_claim_rule_on_synthetic_timings():
    from headlab_repro.claims import get

    c = get("neighborhood-speed")

    def raw(ratio, diff=1e-7):
        case = {
            "dims": 1,
            "ratio": {"median": ratio, "min": ratio * 0.9, "max": ratio * 1.1},
            "pair_ratios": [ratio] * 7,
            "seconds": {"naive": {"median": ratio}, "fused": {"median": 1.0}},
            "max_abs_diff": diff,
        }
        return {"lengths": {"1d@4096": case, "2d@64x64": {**case, "dims": 2}}}

    nums = c.summarize(raw(3.0))
    assert "17.07x" in nums["ratio@1d@4096"]["paper"] and "6.81x" in nums["ratio@2d@64x64"]["paper"]
    assert c.judge(nums)["rule_met"]
    assert not c.judge(c.summarize(raw(1.5)))["rule_met"]
    assert not c.judge(c.summarize(raw(3.0, diff=1e-2)))["rule_met"]
    assert c.size["lengths"] == [4096, 16384] and c.tolerance.kind == "ratio"


def test_halo_claim_rule_on_synthetic_timings():
    from headlab_repro.claims import get

    c = get("halo-speed")

    def raw(ratios):
        lengths = {"1d@4096": {"keys_per_query": 63}}  # a 1D case has no HaloNet timing
        for name, r in ratios.items():
            lengths[name] = {
                "keys_per_query": 169,
                "seconds": {"naive": {"median": r}},
                "halo": {
                    "keys_per_query": 196,
                    "seconds": {"median": 1.0},
                    "ratio": {"median": r, "min": r * 0.9, "max": r * 1.1},
                    "pair_ratios": [r] * 7,
                },
            }
        return {"lengths": lengths}

    assert c.judge(c.summarize(raw({"2d@64x64": 5.0, "2d@128x128": 3.0})))["rule_met"]
    assert not c.judge(c.summarize(raw({"2d@64x64": 5.0, "2d@128x128": 1.5})))["rule_met"]
    assert not c.judge(c.summarize(raw({})))["rule_met"]  # nothing timed
    assert c.command == get("neighborhood-speed").command and c.size["halo"] == [8, 3]
