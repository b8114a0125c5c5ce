"""headlab.results: scipy statistics against their formulas, the claims registry, --check, the renderer,
the committed results/ folders and the CLI (`headlab reproduce`)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from headlab.stats import paired_difference, proportion
from headlab_repro import claims as C
from headlab_repro.check import compare
from headlab_repro.record import KEYS, REQUIRED
from headlab_repro.render import NOTE, render_text, stale_blocks
from headlab_repro.runner import judge_run

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"


# ---------------------------------------------------------------- statistics
def wilson(k, n, z=1.959963984540054):
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return c - h, c + h


@pytest.mark.parametrize("k,n", [(0, 16), (16, 16), (13, 20), (1, 3), (81, 150)])
def test_wilson_interval_matches_formula(k, n):
    p = proportion(k, n)
    lo, hi = wilson(k, n)
    assert p["value"] == k / n and p["n"] == n and p["k"] == k
    assert p["ci"][0] == pytest.approx(max(lo, 0), abs=1e-9) and p["ci"][1] == pytest.approx(min(hi, 1), abs=1e-9)
    assert p["ci"][1] > 0 and p["ci"][0] < 1  # 0/16 is never [0, 0]
    from headlab.stats import wilson as wilson_ci

    assert wilson_ci(k, n) == tuple(p["ci"])


def test_exact_interval_and_sample_form():
    # Clopper-Pearson upper bound for 0/n solves (1 - p)^n = alpha/2
    p = proportion(0, 16, method="exact")
    assert p["ci"][1] == pytest.approx(1 - 0.025 ** (1 / 16), rel=1e-6)
    assert proportion([1, 0, 1, 1]) == proportion(3, 4)
    for bad in [dict(k=5, n=4), dict(k=-1, n=4), dict(k=0, n=0)]:
        with pytest.raises(ValueError, match="0 <= k <= n"):
            proportion(**bad)
    with pytest.raises(ValueError, match="only 0/1"):
        proportion([0, 0.5])
    with pytest.raises(ValueError, match="method"):
        proportion(1, 2, method="wald")


def test_paired_difference_mcnemar_and_bootstrap():
    a = [1] * 12 + [0] * 3 + [1] * 5  # steered
    b = [0] * 12 + [1] * 3 + [1] * 5  # baseline: 12 items only a gets, 3 only b gets
    d = paired_difference(a, b)
    assert d["value"] == pytest.approx(9 / 20) and d["n"] == 20
    assert (d["a_only"], d["b_only"]) == (12, 3)
    exact = 2 * sum(math.comb(15, i) for i in range(0, 4)) / 2**15  # two-sided exact binomial, 3 of 15
    assert d["mcnemar_p"] == pytest.approx(exact, rel=1e-9)
    assert d["ci"][0] < d["value"] < d["ci"][1] and d["ci"][0] > 0
    assert paired_difference(a, b, seed=0) == d  # seeded
    same = paired_difference([1, 0, 1], [1, 0, 1])
    assert same["value"] == 0 and same["ci"] == [0.0, 0.0] and same["mcnemar_p"] == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1, 0], [1])
    with pytest.raises(ValueError, match="empty"):
        paired_difference([], [])


# ---------------------------------------------------------------- registry and rules
def _claim(**kw):
    base = dict(
        name="test-claim",
        claim="c",
        paper="p",
        command=("headlab lab memory-capacity --out {out}",),
        rule="x > 1",
        conditions=lambda x: [(f"x {x['x']['value']} > 1", x["x"]["value"] > 1)],
        summarize=lambda raw: {"x": C.number(raw["x"], n=3)},
        collect=lambda out: ({}, [], {}),
    )
    base.update(kw)
    return C.Claim(**base)


def test_claim_judgement_is_computed_from_numbers():
    c = _claim()
    assert c.judge(c.summarize({"x": 2.0}))["rule_met"] is True
    j = c.judge(c.summarize({"x": 0.5}))
    assert j["rule_met"] is False and j["verdict"].startswith("rule not met: x 0.5 > 1 (no)")
    assert 'x["x"]["value"] > 1' in c.rule_code()


def test_register_refuses_duplicates_and_non_headlab_commands(monkeypatch):
    monkeypatch.setattr(C, "REGISTRY", dict(C.all_claims()))
    C.register(_claim())
    with pytest.raises(ValueError, match="already registered"):
        C.register(_claim())
    with pytest.raises(ValueError, match="start with 'headlab '"):
        C.register(_claim(name="other", command=("python -c 1",)))
    with pytest.raises(ValueError, match="unknown result 'nope'"):
        C.get("nope")


def test_tolerances():
    # exact = float32 rounding: a few ulps pass (seen between machines), a change in the 6th digit does not
    assert C.Tolerance().ok(0.5, 0.5) and C.Tolerance().ok(0.7022126317, 0.7022125125)
    assert not C.Tolerance().ok(0.5, 0.5 + 3e-6) and not C.Tolerance().ok(5000.0, 5000.01)
    assert C.Tolerance("abs", 0.01).ok(0.5, 0.509) and not C.Tolerance("abs", 0.01).ok(0.5, 0.52)
    r = C.Tolerance("ratio", 0.2)
    assert r.ok(5.0, 5.9) and r.ok(5.0, 4.2) and not r.ok(5.0, 6.1) and not r.ok(5.0, 4.1)
    with pytest.raises(ValueError, match="tolerance kind"):
        C.Tolerance("loose")


def test_compare_reports_moved_missing_and_changed_outcome():
    old = {
        "measured": {"a": {"value": 0.5, "ci": [0.4, 0.6], "n": 10}},
        "rule_met": True,
        "tolerance": {"kind": "exact", "value": 0},
    }
    assert compare(old, json.loads(json.dumps(old))) == []
    new = {"measured": {"a": {"value": 0.51, "ci": [0.4, 0.6], "n": 10}, "b": {"value": 1}}, "rule_met": False}
    problems = compare(old, new)
    assert any(p.startswith("a.value: committed 0.5, rerun 0.51") for p in problems)
    assert any(p.startswith("b.value: new in the rerun") for p in problems)
    assert any("rule outcome changed" in p for p in problems)
    # a number that is NaN in the rerun and null (JSON's NaN) in the committed result is the same "no number"
    nan_old = {"measured": {"a": {"value": None}}, "rule_met": False, "tolerance": {"kind": "exact", "value": 0}}
    assert compare(nan_old, {"measured": {"a": {"value": float("nan")}}, "rule_met": False}) == []


def test_every_claim_is_complete():
    claims = C.all_claims()
    for name in ("memory-capacity", "icl-regression", "induction", "moh", "sinks", "zerotuning-sst2"):
        assert name in claims
    for c in claims.values():
        assert c.rule and c.size and c.cost_s > 0 and c.table, c.name
        assert all("{out}" in cmd for cmd in c.command), c.name
        for dep in c.depends:
            assert dep in claims


def test_lab_run_defaults_equal_registered_sizes():
    """The size registered under an experiment's own name is its configuration's defaults, what `run()` does by
    default (every claim's command line against its size: tests/lab/test_config.py)."""
    from headlab.lab import CONFIGS

    for name, cls in CONFIGS.items():
        defaults = cls().record()
        for k, v in C.get(name).size.items():
            assert defaults[k] == v, f"{name}: {cls.__name__}.{k}={defaults[k]!r} vs size {v!r}"


def test_size_check_refuses_another_size():
    from headlab_repro.runner import check_size

    c = C.get("memory-capacity")
    check_size(c, {"config": {"d_ks": [16, 32, 64, 128], "trials": 5, "d_v": 64, "beta": 16.0, "seed": 0}}, False)
    with pytest.raises(RuntimeError, match="new claim with its own name"):
        check_size(c, {"config": {"d_ks": [16, 32, 64, 128], "trials": 3}}, False)


# ---------------------------------------------------------------- rendering
def test_render_replaces_only_marker_blocks(tmp_path):
    text = "before\n<!-- results:lab -->\nold table\n<!-- /results:lab -->\nafter\n"
    out = render_text(text, RESULTS)
    assert out.startswith("before\n<!-- results:lab -->\n" + NOTE) and out.endswith("<!-- /results:lab -->\nafter\n")
    assert "old table" not in out and "`memory-capacity`" in out
    assert render_text(out, RESULTS) == out  # idempotent
    with pytest.raises(ValueError, match="unknown results block 'nope'"):
        render_text("<!-- results:nope -->\n<!-- /results:nope -->", RESULTS)
    empty = render_text(text, tmp_path)  # no committed results: says so, no numbers
    assert "no committed result" in empty
    generic = render_text("<!-- results:table:lab -->\n<!-- /results:table:lab -->", RESULTS)
    assert "`icl-regression`" in generic and "best mse: 0.538" in generic
    one = render_text("<!-- results:detail:memory-capacity -->\n<!-- /results:detail:memory-capacity -->", RESULTS)
    assert "n50_slope" in one and "headlab lab memory-capacity --trials 5" in one


def test_readme_and_docs_tables_equal_the_results():
    """Fails when a results table in README.md or docs/*.md differs from what results/ gives."""
    stale = stale_blocks(REPO, RESULTS)
    assert not stale, "run `headlab reproduce --render`: " + ", ".join(stale)


# ---------------------------------------------------------------- committed results
def _committed():
    return sorted(p.parent for p in RESULTS.glob("**/result.json") if not any(s.startswith(".") for s in p.parts))


def test_committed_results_have_every_key_and_a_computed_verdict():
    folders = _committed()
    assert len(folders) >= 6
    for f in folders:
        res = json.loads((f / "result.json").read_text())
        assert set(REQUIRED) <= set(res), f
        claim = C.get(res["name"])
        j = judge_run(claim, res["measured"], res["smoke"], res.get("cpu") or {})  # the verdict follows from the numbers
        assert (j["rule_met"], j["verdict"]) == (res["rule_met"], res["verdict"]), f
        assert res["command"] and all(c.startswith("headlab ") for c in res["command"])
        assert res["size"] == (claim.smoke_size if res["smoke"] else claim.size)
        files = res["files"]
        for key in ("raw", "plot", "records"):
            for name in [files[key]] if isinstance(files[key], str) else files[key]:
                assert (f / name).exists(), f"{f}: {name}"
        assert any(isinstance(v, dict) and "n" in v for v in res["measured"].values()), f"{f}: no item counts"


def test_reproduce_smoke_check_passes_and_detects_a_moved_number(tmp_path):
    from headlab_repro.runner import reproduce

    res, problems = reproduce("memory-capacity", tmp_path / "run", smoke=True, check=True, root=RESULTS, log=lambda s: None)
    assert problems == [], problems
    assert set(KEYS) <= set(res) and res["evidence"] == "smoke" and res["started_commit"] and res["cpu"]["wall_s"] > 0
    assert (tmp_path / "run" / "result.json").exists() and (tmp_path / "run" / "memory-capacity.png").exists()
    fake = tmp_path / "results"
    shutil.copytree(RESULTS / "memory-capacity" / "smoke", fake / "memory-capacity" / "smoke")
    p = fake / "memory-capacity" / "smoke" / "result.json"
    d = json.loads(p.read_text())
    d["measured"]["n50_slope"]["value"] += 0.01
    p.write_text(json.dumps(d))
    _, problems = reproduce("memory-capacity", tmp_path / "run2", smoke=True, check=True, root=fake, log=lambda s: None)
    assert len(problems) == 1 and problems[0].startswith("n50_slope.value")


def test_cli_list_and_errors():
    from typer.testing import CliRunner

    from headlab.cli import app

    r = CliRunner().invoke(app, ["reproduce", "--list"])
    assert r.exit_code == 0, r.output
    for name in C.all_claims():
        assert name[:10] in r.output
    r = CliRunner().invoke(app, ["reproduce", "nope"])
    assert r.exit_code == 2 and "unknown result 'nope'" in r.output
    r = CliRunner().invoke(app, ["reproduce"])
    assert r.exit_code == 2 and "exactly one of" in r.output


@pytest.mark.slow
def test_reproduce_memory_capacity_check():
    """CI: `headlab reproduce memory-capacity --check` at the registered size (about 10 CPU-seconds)."""
    from typer.testing import CliRunner

    from headlab.cli import app

    r = CliRunner().invoke(app, ["reproduce", "memory-capacity", "--check", "--out", "headlab-report/reproduce/ci-mc"])
    assert r.exit_code == 0, r.output
    assert "every number equals the committed result" in r.output


@pytest.mark.model
def test_reproduce_steering_smoke_check():
    """CI: one steering result's `--check --smoke` on SmolLM2 (a few CPU-minutes at most)."""
    from typer.testing import CliRunner

    from headlab.cli import app

    r = CliRunner().invoke(
        app, ["reproduce", "zerotuning-sst2", "--smoke", "--check", "--out", "headlab-report/reproduce/ci-zt-smoke"]
    )
    assert r.exit_code == 0, r.output


def test_adopt_judges_a_finished_run_of_the_registered_command_only(tmp_path, monkeypatch):
    """`headlab reproduce NAME --from RUN`: the run's recorded command must be the registered one up to
    --out / --resume / --quiet; the result is computed from its files, written atomically."""
    from headlab_repro import runner

    monkeypatch.setattr(C, "REGISTRY", dict(C.all_claims()))

    def collect(out):
        raw = json.loads((Path(out) / "results.json").read_text())
        return raw, [{"seconds": 2.5}, {"seconds": 1.5}], {"raw": "results.json"}

    C.register(
        _claim(
            name="adopt-me",
            command=("headlab sparsify eval --plan {results}/p.json --trials 4 --out {out}",),
            summarize=lambda raw: {"x": C.number(raw["x"], n=4)},
            collect=collect,
        )
    )
    run = tmp_path / "run"
    run.mkdir()
    cmd = f"headlab sparsify eval --plan {RESULTS}/p.json --trials 4 --out {run} --resume --quiet"
    (run / "results.json").write_text(json.dumps({"command": cmd, "x": 2.0}))
    res, problems = runner.adopt("adopt-me", run, tmp_path / "out", root=RESULTS)
    assert problems == [] and res["rule_met"] is True and res["seconds"] == 4.0
    written = json.loads((tmp_path / "out" / "result.json").read_text())
    assert written["verdict"] == res["verdict"] and (tmp_path / "out" / "results.json").exists()
    assert written["command"] == [
        f"headlab sparsify eval --plan {runner._show(RESULTS)}/p.json --trials 4 --out {runner._show(tmp_path / 'out')}"
    ]
    # another size, or no recorded command: refused, nothing written
    for bad in ({"command": cmd.replace("--trials 4", "--trials 5"), "x": 2.0}, {"x": 2.0}):
        (run / "results.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="registered command|does not record"):
            runner.adopt("adopt-me", run, tmp_path / "out2", root=RESULTS)
        assert not (tmp_path / "out2").exists()
