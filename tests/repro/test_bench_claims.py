"""The bench claims (headlab/results/bench_claims.py): `headlab sparsify reach --out DIR` and `headlab bench
capture --out DIR` folders, and the registered rules on synthetic numbers (pass and fail cases)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from headlab_repro import claims as C


# ---------------------------------------------------------------- sparsify reach
def test_reach_out_folder_and_md_file(tmp_path):
    from headlab.cli.sparsify import app

    r = CliRunner().invoke(app, ["reach", "--length", "256", "--block-length", "1024", "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    d = tmp_path / "r"
    assert sorted(p.name for p in d.iterdir()) == ["reach.json", "reach.png", "reach.records.jsonl", "table.md"]
    raw = json.loads((d / "reach.json").read_text())
    assert raw["config"] == {"length": 256, "block_length": 1024, "max_layers": 64, "block": 64}
    assert raw["command"] == "headlab sparsify reach --length 256 --block-length 1024 --max-layers 64"
    assert raw["popcount_bound"] == {"256": 2, "1024": 4}  # 4 blocks: distances 1..3 -> popcount <= 2; 16: 15 -> 4
    names = [x["name"] for x in raw["rows"]]
    assert names[0] == "window(32)" and "power(64, window 1, sink 0) pure" in names and len(raw["rows_long"]) == 4
    nb = next(x for x in raw["rows"] if x["name"].startswith("neighborhood"))
    assert nb["layers_to_full"] is None and nb["never"] and nb["coverage"][-1] < 0.6  # residues never mix
    recs = [json.loads(x) for x in (d / "reach.records.jsonl").read_text().splitlines()]
    assert len(recs) == sum(len(x["coverage"]) for x in raw["rows"] + raw["rows_long"])
    assert "layers to full" in (d / "table.md").read_text()
    # the .md form writes the same table and nothing else
    r = CliRunner().invoke(app, ["reach", "--length", "256", "--block-length", "1024", "--out", str(tmp_path / "t.md")])
    assert r.exit_code == 0 and (tmp_path / "t.md").read_text() == (d / "table.md").read_text()
    r = CliRunner().invoke(app, ["reach", "--length", "100", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "length must be an int >= 128, got 100" in r.output and not (tmp_path / "bad").exists()


def test_reach_claim_smoke_passes_and_its_rule_fails_on_a_broken_bound(tmp_path):
    from headlab_repro.runner import reproduce

    res, _ = reproduce("sparsify-reach", tmp_path / "run", smoke=True, log=lambda s: None)
    assert res["rule_met"], res["verdict"]
    m = res["measured"]
    assert m["power(64, window 1, sink 0) pure @ 2048"]["value"] == 5 and m["window(32) @ 256"]["value"] == 9
    claim = C.get("sparsify-reach")
    worse = json.loads(json.dumps(m))
    worse["power(64, window 1, sink 0) pure @ 2048"]["value"] = 6.0  # beyond floor(log2(31)) + 1 = 5
    j = claim.judge(worse)
    assert not j["rule_met"] and sum(not c["passed"] for c in j["conditions"]) == 2  # the bound and the log growth
    lin = json.loads(json.dumps(m))
    lin["window(32) @ 256"]["value"] = 8.0  # fewer layers than a window can need
    assert not claim.judge(lin)["rule_met"]
    never = json.loads(json.dumps(m))
    never["power(64, window 4, sink 1) @ 256"]["value"] = None  # stored NaN (never full) fails
    assert not claim.judge(never)["rule_met"]


# ---------------------------------------------------------------- bench capture
@pytest.fixture
def tiny_folder(tmp_path):
    from conftest import save_tiny_llama

    return save_tiny_llama(tmp_path / "tiny")


def test_capture_out_folder_alternates_and_checks_the_probes(tmp_path, tiny_folder):
    from headlab.cli import app

    out = tmp_path / "cap"
    args = ["bench", "capture", "--model", str(tiny_folder), "--lengths", "24,40", "--repeats", "3"]
    r = CliRunner().invoke(app, [*args, "--probes", "sink,entropy", "--threads", "1", "--no-rss", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["capture.json", "capture.png", "capture.records.jsonl", "table.md"]
    raw = json.loads((out / "capture.json").read_text())
    c = raw["config"]
    assert (c["lengths"], c["repeats"], c["probes"], c["threads"]) == ([24, 40], 3, ["sink", "entropy"], 1)
    assert raw["command"].startswith("headlab bench capture --lengths 24,40 --repeats 3 --probes sink,entropy")
    for n in ("24", "40"):
        x = raw["lengths"][n]
        assert x["layers_seen"] == 2  # both layers of the tiny model went through the probes
        order = [(s["repeat"], s["mode"]) for s in x["samples"]]
        assert order == [(0, "dense"), (0, "probes"), (1, "probes"), (1, "dense"), (2, "dense"), (2, "probes")]
        d = [s["seconds"] for s in x["samples"] if s["mode"] == "dense"]
        p = [s["seconds"] for s in x["samples"] if s["mode"] == "probes"]
        ratios = [b / a for a, b in zip(d, p)]
        assert x["pair_ratios"] == pytest.approx(ratios)
        assert x["ratio"]["median"] == pytest.approx(sorted(ratios)[1]) and x["ratio"]["min"] == pytest.approx(min(ratios))
        assert all(math.isfinite(v) and v > 0 for v in ratios)
    assert len((out / "capture.records.jsonl").read_text().splitlines()) == 12
    assert "| 24 |" in (out / "table.md").read_text()


def test_capture_bad_input(tmp_path, tiny_folder):
    from headlab.bench.capture import prose_ids, run
    from headlab.cli import app

    base = ["bench", "capture", "--model", str(tiny_folder), "--out", str(tmp_path / "x")]
    r = CliRunner().invoke(app, [*base, "--lengths", "1"])
    assert r.exit_code == 2 and "integers >= 2" in r.output
    r = CliRunner().invoke(app, [*base, "--probes", "sink,nope"])
    assert r.exit_code == 2 and "unknown ['nope']" in r.output
    r = CliRunner().invoke(app, [*base, "--repeats", "0"])
    assert r.exit_code == 2 and "--repeats must be >= 1" in r.output
    assert not (tmp_path / "x").exists()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_folder)
    ids = prose_ids(tok, 50000)  # longer than the prose: tiled
    assert ids.shape == (1, 50000)
    with pytest.raises(ValueError, match="length must be an int >= 2"):
        prose_ids(tok, 1)
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        run(None, tok, [8], ["sink"], repeats=0)


def _capture_raw(ratios: dict[str, list[float]]) -> dict:
    out = {}
    for n, rs in ratios.items():
        srt = sorted(rs)
        med = srt[len(rs) // 2]
        out[n] = {
            "ratio": {"median": med, "min": srt[0], "max": srt[-1]},
            "ratio_of_medians": med,
            "cpu_ratio": {"median": med, "min": srt[0], "max": srt[-1]},
            "seconds": {m: {"median": 1.0, "min": 1.0, "max": 1.0} for m in ("dense", "probes")},
        }
    return {"config": {"repeats": 5}, "lengths": out}


def test_capture_rule_on_synthetic_ratios():
    claim = C.get("bench-capture")
    ok = claim.judge(claim.summarize(_capture_raw({"2048": [1.3, 1.4, 1.45, 1.5, 1.9], "8192": [1.2, 1.2, 1.3, 1.3, 1.4]})))
    assert ok["rule_met"] and len(ok["conditions"]) == 2
    assert "1.45x the plain SDPA forward (median of 5 alternating pairs, range 1.30-1.90x" in ok["conditions"][0]["text"]
    bad = claim.judge(claim.summarize(_capture_raw({"2048": [1.3, 1.4, 1.4, 1.5, 1.5], "8192": [1.5, 1.6, 1.6, 1.7, 1.8]})))
    assert not bad["rule_met"] and [c["passed"] for c in bad["conditions"]] == [True, False]


# ---------------------------------------------------------------- pattern swaps and hybrids (synthetic rows)
def _row(label: str, n: int, hits: list[int], kind: str = "pattern", ppl: float = 30.0, dens: float = 0.3) -> dict:
    depths = [0.1 + 0.8 * i / (len(hits) - 1) for i in range(len(hits))]
    return {
        "label": label,
        "kind": kind,
        "length": n,
        "trials": len(hits),
        "ppl": ppl,
        "speedup": 1.2,
        "density": dens,
        "model_density": dens,
        "by_depth": [[d, bool(h), -1.0] for d, h in zip(depths, hits)],
    }


def _swap_raw(better: int) -> dict:
    rows = []
    for n in (2048, 4096, 8192):
        rows.append(_row("dense", n, [1] * 20, kind="dense"))
        for p in ("power", "strided", "moa"):
            base = [0] * 20
            rows.append(_row(p, n, [1] * better + base[better:]))
            rows.append(_row(f"sink_window(64, 400) [matched to {p}]", n, base))
    return {"run": {"command": "x", "rows": rows}}


def test_swap_rule_on_synthetic_prompts():
    claim = C.get("sparsify-patterns")
    win = claim.judge(claim.summarize(_swap_raw(better=2)))  # 6 of 60 only the pattern finds, 0 reverse: p = 0.031
    assert win["rule_met"], win["verdict"]
    assert "p = 0.0312" in win["conditions"][0]["text"]
    tie = claim.judge(claim.summarize(_swap_raw(better=1)))  # 3 vs 0: p = 0.25
    assert not tie["rule_met"] and not any(c["passed"] for c in tie["conditions"])
    x = claim.summarize(_swap_raw(better=2))
    assert x["power@8192.accuracy"]["k"] == 2 and x["matched:power@8192.accuracy"]["k"] == 0
    assert x["dense@2048.accuracy"]["value"] == 1.0 and x["power@4096.ppl"]["ppl_vs_dense"] == 1.0


def test_hybrid_rule_on_synthetic_prompts():
    claim = C.get("sparsify-hybrid-4k")

    def raw(ret: list[int], spread: list[int], dens=(0.538, 0.538)) -> dict:
        mk = lambda hits, d: {  # noqa: E731
            "command": "x",
            "rows": [_row("dense", 4096, [1] * 20, kind="dense", dens=1.0), _row("power", 4096, hits, dens=d)],
        }
        return {"retrieval-layers": mk(ret, dens[0]), "spread-layers": mk(spread, dens[1])}

    good = claim.judge(claim.summarize(raw([1] * 12 + [0] * 8, [1] * 2 + [0] * 18)))
    assert good["rule_met"], good["verdict"]
    same = claim.judge(claim.summarize(raw([1] * 5 + [0] * 15, [1] * 4 + [0] * 16)))
    assert not same["rule_met"]
    dens = claim.judge(claim.summarize(raw([1] * 12 + [0] * 8, [0] * 20, dens=(0.538, 0.6))))
    assert not dens["rule_met"] and not dens["conditions"][0]["passed"] and dens["conditions"][1]["passed"]
