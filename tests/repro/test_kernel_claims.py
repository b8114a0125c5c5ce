"""The kernel / device / report claims (``headlab_repro.kernel_claims``): their summaries and rules on
hand-built raw outputs (one passing and one failing case each, expectations computed here by hand), the
collectors on hand-made run folders, ``headlab bench lse`` end to end at a tiny size, the records of
``headlab bench kernels`` and its default output folder."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headlab_repro import claims as C
from headlab_repro import kernel_claims as K
from headlab_repro.render import num


def _verdict(name: str, raw: dict) -> tuple[dict, dict]:
    c = C.get(name)
    x = c.summarize(raw)
    return x, c.judge(x)


# ---------------------------------------------------------------- bench-kernels
def _row(name, backend, dense, kernel, asked="auto", density=0.0625):
    return {
        "name": name,
        "asked": asked,
        "backend": backend,
        "density": density,
        "theoretical": 1 / density,
        "seconds": sorted(kernel)[1],
        "dense_s": sorted(dense)[1],
        "plan_s": 0.0,
        "cpu_achieved": 1.0,
        "max_err": None,
        "samples": {"dense": {"wall": dense, "cpu": dense}, "kernel": {"wall": kernel, "cpu": kernel}},
    }


def _kernels_raw(window_kernel=(0.5, 0.4, 0.6), decision_samples=3, winner="gather"):
    return {
        "rows": [
            _row("window(256)", "band", [4.0, 3.9, 4.1], list(window_kernel)),
            _row("window(256) [gather]", "gather", [4.0, 4.0, 4.0], [0.8, 0.8, 0.8], asked="gather"),
            _row("sink_window(64, 256)", "band", [3.5, 3.5, 3.5], [0.5, 0.5, 0.5]),
            _row("sink_window(64, 256) [gather]", "gather", [3.5, 3.5, 3.5], [0.7, 0.7, 0.7], asked="gather"),
            _row("power(64, 4, 1)", "gather", [4.0, 4.0, 4.0], [1.0, 1.0, 1.0], density=0.13),
        ],
        "flex": [
            {
                "name": "window(256)",
                "density": 0.0625,
                "seconds": 0.9,
                "dense": 4.5,
                "theoretical": 16.0,
                "first_call_s": 6.0,
                "samples": {"dense": {"wall": [4.5, 4.5, 4.5]}, "kernel": {"wall": [0.9, 0.9, 0.9]}},
            }
        ],
        "auto_decisions": [
            {
                "pattern": "power(64, 4, 1)",
                "T": 8192,
                "backend": winner,
                "samples": {"gather": [1.0, 1.1, 0.9][:decision_samples], "flex": [2.0, 2.1, 1.9][:decision_samples]},
                "failed": {},
            }
        ],
    }


def test_kernels_summary_and_rule_met():
    x, j = _verdict("bench-kernels", _kernels_raw())
    assert x["window(256)"]["value"] == pytest.approx(4.0 / 0.5)  # median dense 4.0 / median kernel 0.5
    assert x["window(256)"]["range"] == pytest.approx([4.1 / 0.6, 3.9 / 0.4])  # per-round ratios 8, 9.75, 6.83
    assert x["window(256)"]["ran"] == "band" and x["window(256)"]["n"] == 3
    assert x["window(256) [gather]"]["value"] == pytest.approx(5.0)
    assert x["window(256) [flex pinned]"]["value"] == pytest.approx(5.0) and x["window(256) [flex pinned]"]["ran"] == "flex"
    d = x["auto choice: power(64, 4, 1) @ 8192"]
    assert d["value"] == pytest.approx(1.0) and d["n"] == 3 and d["lowest"] is True
    assert j["rule_met"], j["verdict"]
    assert "8.00x faster" in j["verdict"]


def test_kernels_rule_fails_on_slow_window_few_samples_or_a_wrong_choice():
    _, j = _verdict("bench-kernels", _kernels_raw(window_kernel=(0.8, 0.8, 0.9)))  # 4.0 / 0.8 = 5x < 6x
    failed = [c["text"] for c in j["conditions"] if not c["passed"]]
    assert not j["rule_met"] and len(failed) == 1 and "5.00x faster" in failed[0]
    _, j = _verdict("bench-kernels", _kernels_raw(decision_samples=2))
    assert not j["rule_met"] and "auto choice: power(64, 4, 1) @ 8192" in j["conditions"][-1]["text"]
    _, j = _verdict("bench-kernels", _kernels_raw(winner="flex"))  # flex's median 2.0 > gather's 1.0
    assert not j["rule_met"] and not j["conditions"][-1]["passed"]
    raw = _kernels_raw()
    raw["rows"][1]["backend"] = "auto"  # a row that does not name what ran
    _, j = _verdict("bench-kernels", raw)
    assert not j["rule_met"] and "window(256) [gather]" in j["conditions"][3]["text"]
    raw = _kernels_raw()
    raw["rows"][0]["samples"]["kernel"]["wall"] = [0.9, 0.9, 0.9]
    raw["rows"][0]["seconds"] = 0.9  # 4.0 / 0.9 = 4.4x: below 6x and below the pinned gather row's 4.0 / 0.8 = 5x
    _, j = _verdict("bench-kernels", raw)
    assert [c["passed"] for c in j["conditions"]] == [False, False, True, True, True]


def test_kernel_records_and_default_output_folder(tmp_path):
    from headlab.bench.kernel_files import records
    from headlab.cli.bench import kernels_cmd

    raw = _kernels_raw()
    lines = [json.loads(x) for x in records(raw).splitlines()]
    assert len(lines) == 5 * 6 + 6  # 5 rows and one flex row, 3 dense + 3 kernel calls each
    assert {(r["row"], r["ran"]) for r in lines if r["kind"] == "kernel" and r["section"] == "rows"} >= {
        ("window(256)", "band"),
        ("power(64, 4, 1)", "gather"),
    }
    assert all(r["ran"] == "sdpa" for r in lines if r["kind"] == "dense")
    default = inspect.signature(kernels_cmd).parameters["out"].default.default
    assert Path(default) == Path("headlab-report/bench-kernels")  # never results/ nor a hand-written file


# ---------------------------------------------------------------- bench-lse
def _lse_raw(ratio=3.0, diff=1e-6):
    def length(r):
        return {
            "seconds": {
                "cpu_flash": {"median": 0.2, "min": 0.1, "max": 0.3},
                "flex": {"median": 0.2 * r, "min": 0.1 * r, "max": 0.3 * r},
            },
            "ratio": {"median": r, "min": r * 0.9, "max": r * 1.1},
            "max_abs_diff_output": diff,
            "max_abs_diff_lse": diff / 2,
        }

    return {
        "config": {"lengths": [1024, 2048], "repeats": 5, "threads": 2},
        "default_backend": "cpu_flash",
        "lengths": {"1024": length(ratio), "2048": length(ratio + 1)},
    }


def test_lse_rule_met_when_the_default_is_faster_and_outputs_agree():
    x, j = _verdict("bench-lse", _lse_raw())
    assert x["flex/cpu_flash@1024"]["value"] == 3.0 and x["flex/cpu_flash@2048"]["value"] == 4.0
    assert x["cpu_flash_s@2048"]["value"] == 0.2 and x["flex_s@1024"]["n"] == 5
    assert j["rule_met"] and len(j["conditions"]) == 4


def test_lse_rule_fails_when_flex_is_faster_or_the_outputs_differ():
    _, j = _verdict("bench-lse", _lse_raw(ratio=0.5))  # flex faster at 1024 (0.5), slower at 2048 (1.5)
    assert [c["passed"] for c in j["conditions"]] == [False, True, True, True]
    _, j = _verdict("bench-lse", _lse_raw(diff=1e-3))
    assert [c["passed"] for c in j["conditions"]] == [True, False, True, False]


def test_cli_bench_lse_tiny(tmp_path):
    from headlab.cli.bench import app as bench_app

    out = tmp_path / "lse"
    res = CliRunner().invoke(bench_app, ["lse", "--lengths", "16,40", "--repeats", "2", "--threads", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["lse.json", "lse.png", "lse.records.jsonl", "table.md"]
    data = json.loads((out / "lse.json").read_text())
    assert data["command"] == "headlab bench lse --lengths 16,40 --repeats 2 --threads 1"
    assert data["config"]["lengths"] == [16, 40] and data["default_backend"] == "cpu_flash"
    for n in ("16", "40"):
        r = data["lengths"][n]
        assert len(r["pair_ratios"]) == 2 and r["max_abs_diff_output"] < 1e-4 and r["max_abs_diff_lse"] < 1e-4
        assert {s["backend"] for s in r["samples"]} == {"cpu_flash", "flex"} and len(r["samples"]) == 4
    raw, records, files = C.get("bench-lse").collect(out)
    assert len(records) == 8 and files["raw"] == "lse.json"
    for bad, word in ((["--repeats", "0"], "--repeats"), (["--lengths", "1,x"], "--lengths"), (["--threads", "-1"], "--threads")):
        res = CliRunner().invoke(bench_app, ["lse", *bad, "--out", str(tmp_path / "bad")])
        assert res.exit_code != 0 and word in res.output
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- devices-bf16
def _scan_folder(path: Path, values: dict, tokens=1024):
    path.mkdir(parents=True)
    heads = [{"layer": 0, "head": h, **{m: v[h] for m, v in values.items()}} for h in range(2)]
    (path / "heads.json").write_text(json.dumps(heads))
    meta = {"texts": [{"name": "text0", "n_tokens": tokens}], "metrics": list(K.BF16_METRICS), "command": "x"}
    (path / "meta.json").write_text(json.dumps(meta))
    (path / "atlas.png").write_bytes(b"")


FP32 = {"sink": [0.5, 0.1], "prev_token": [0.2, 0.05], "entropy": [2.0, 1.0], "distance": [100.0, 50.0]}


def test_bf16_collect_summary_and_rule(tmp_path):
    bf16 = {"sink": [0.51, 0.1], "prev_token": [0.2, 0.06], "entropy": [2.02, 1.01], "distance": [101.0, 50.0]}
    _scan_folder(tmp_path / "fp32", FP32)
    _scan_folder(tmp_path / "bf16", bf16)
    raw, records, files = C.get("devices-bf16").collect(tmp_path)
    assert raw["config"] == {"max_tokens": 1024, "n_texts": 1, "metrics": list(K.BF16_METRICS), "dtypes": ["float32", "bfloat16"]}
    assert records[1]["prev_token_diff"] == pytest.approx(0.01) and len(records) == 2
    x, j = _verdict("devices-bf16", raw)
    assert x["sink.max_abs_diff"]["value"] == pytest.approx(0.01)
    assert x["entropy.max_rel_diff"]["value"] == pytest.approx(0.01)  # 0.02 / 2.0 and 0.01 / 1.0
    assert x["distance.max_abs_diff"]["fp32_mean"] == pytest.approx(75.0)
    assert j["rule_met"], j["verdict"]  # distance 1.0 < 2 % of 75 = 1.5


def test_bf16_rule_fails_beyond_the_tests_tolerance(tmp_path):
    bf16 = {"sink": [0.53, 0.1], "prev_token": [0.2, 0.05], "entropy": [2.0, 1.03], "distance": [102.0, 50.0]}
    _scan_folder(tmp_path / "fp32", FP32)
    _scan_folder(tmp_path / "bf16", bf16)
    raw, _, _ = C.get("devices-bf16").collect(tmp_path)
    _, j = _verdict("devices-bf16", raw)
    # sink 0.03 >= 0.02; prev_token 0; entropy 3 % >= 2 %; distance 2.0 >= 1.5
    assert [c["passed"] for c in j["conditions"]] == [False, True, False, False]


def test_bf16_collect_refuses_scans_of_different_sizes(tmp_path):
    _scan_folder(tmp_path / "fp32", FP32)
    _scan_folder(tmp_path / "bf16", FP32, tokens=512)
    with pytest.raises(ValueError, match="differ beyond the dtype"):
        C.get("devices-bf16").collect(tmp_path)


# ---------------------------------------------------------------- report-page-2k
def _report_folder(path: Path, detail: int, overview: int, pad: int = 0):
    from headlab.report.html import script_json

    heads = {f"L{i // 9}H{i % 9}": {"kind": "detail", "rows": 8, "cols": 8} for i in range(detail)}
    heads |= {f"L{i // 9}H{i % 9}": {"kind": "overview", "rows": 4, "cols": 4} for i in range(detail, detail + overview)}
    data = {"maps": {"texts": [{"n_tokens": 2048, "heads": heads}], "px": 256, "overview_px": 64, "topk": 8, "rule": "r"}}
    page = (
        f'<html><script type="application/json" id="headlab-data">{script_json(data)}</script><script>{"x" * pad}</script></html>'
    )
    path.mkdir(parents=True)
    (path / "index.html").write_text(page, encoding="utf-8")
    meta = {"texts": [{"name": "t", "n_tokens": 2048}], "metrics": K.REPORT_METRICS.split(","), "n_layers": 30, "n_heads": 9}
    (path / "meta.json").write_text(json.dumps(meta))
    return len(page.encode("utf-8"))


def test_report_collect_summary_and_rule(tmp_path):
    size = _report_folder(tmp_path / "ok", 24, 246)
    raw, records, files = C.get("report-page-2k").collect(tmp_path / "ok")
    assert raw["page"]["bytes"] == size and len(records) == 270 and files["page"] == "index.html"
    x, j = _verdict("report-page-2k", raw)
    assert x["detail_heads"]["value"] == 24 and x["overview_heads"]["value"] == 246
    assert x["page_mb"]["value"] == pytest.approx(size / 1e6)
    assert x["full_maps_over_page"]["value"] == pytest.approx(270 * 2048**2 * 4 / size)
    assert j["rule_met"], j["verdict"]


def test_report_rule_fails_on_missing_maps_few_details_or_a_big_page(tmp_path):
    _report_folder(tmp_path / "a", 20, 240)
    raw, _, _ = C.get("report-page-2k").collect(tmp_path / "a")
    _, j = _verdict("report-page-2k", raw)  # 260 of 270 heads mapped, 20 < 24 detailed
    assert [c["passed"] for c in j["conditions"]] == [True, False, False]
    _report_folder(tmp_path / "b", 24, 246, pad=9_600_000)
    raw, _, _ = C.get("report-page-2k").collect(tmp_path / "b")
    _, j = _verdict("report-page-2k", raw)
    assert [c["passed"] for c in j["conditions"]] == [False, True, True]


# ---------------------------------------------------------------- registry and rendering
def test_registered_commands_match_their_sizes():
    k = C.get("bench-kernels")
    assert "--tokens 8192" in k.command[0] and "--repeats 3" in k.command[0] and "--threads 2" in k.command[0]
    assert "--tokens 512" in k.smoke[0] and k.smoke_size["tokens"] == 512
    assert C.get("bench-lse").command[0].startswith("headlab bench lse --lengths 1024,2048 --repeats 5")
    b = C.get("devices-bf16")
    assert [("--dtype float32" in c, "--dtype bfloat16" in c, "--max-tokens 1024" in c) for c in b.command] == [
        (True, False, True),
        (False, True, True),
    ]
    assert "--max-tokens 2048" in C.get("report-page-2k").command[0] and "--html" in C.get("report-page-2k").command[0]
    for name in ("bench-kernels", "bench-lse"):
        assert C.get(name).tolerance.kind == "ratio"


def test_rendered_numbers_name_the_backend_that_ran():
    assert num({"value": 8.0, "n": 3, "ran": "band"}) == "8.000 (n=3), ran band"
    assert num({"value": 0.5, "n": 10}) == "0.500 (n=10)"
