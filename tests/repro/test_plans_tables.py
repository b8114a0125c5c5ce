"""docs/plans.md's tables are rendered from the sparsify results' raw rows (not pasted)."""

from __future__ import annotations

import json

from headlab_repro.render import render_text
from headlab_repro.sparsify_claims import configs_table, frontier_table


def _write(root, name, rows):
    (root / name).mkdir(parents=True)
    (root / name / "result.json").write_text(json.dumps({"name": name, "files": {"raw": "results.json"}}))
    (root / name / "results.json").write_text(json.dumps({"command": "x", "rows": rows}))


def _row(label, kind, correct, trials, lp, ppl, speed, decode=None, kv=0.35):
    return dict(
        label=label,
        kind=kind,
        correct=correct,
        trials=trials,
        answer_logprob=lp,
        ppl=ppl,
        speedup=speed,
        decode_speedup=decode,
        kv_fraction=kv,
    )


def test_configs_table_rows_and_decode_column(tmp_path):
    _write(
        tmp_path,
        "sparsify-plans-8k",
        [
            _row("dense", "dense", 16, 20, -0.37, 27.42, 1.0, 1.0, 1.0),
            _row("duo-0.35-8192-fs09", "plan", 9, 20, -0.54, 27.9, 1.475, 1.405),
        ],
    )
    t = configs_table(tmp_path, "sparsify-plans-8k")
    lines = t.strip().splitlines()
    assert lines[0].endswith("| decode vs dense |")
    assert lines[2] == "| dense | 16/20 | -0.37 | 27.42 | 1.000 | 1.00× | 1.00× |"
    assert lines[3] == "| duo 0.35 fs09 | 9/20 | -0.54 | 27.90 | 0.350 | 1.48× | 1.41× |"
    _write(tmp_path, "sparsify-plans-4k", [_row("uniform-0.35-4096", "plan", 3, 10, -2.54, 30.66, 1.73)])
    assert "decode" not in configs_table(tmp_path, "sparsify-plans-4k")
    assert "No committed result" in configs_table(tmp_path, "sparsify-duo-fs09-8k")


def test_frontier_grid(tmp_path):
    rows = [_row("dense", "dense", 9, 10, -0.19, 30.4, 1.0, kv=1.0)]
    for b, k in (("0.5", 8), ("0.25", 1)):
        rows += [
            _row(f"duo-{b}-4096", "plan", k, 10, -0.3, 30.5, 1.1),
            _row(f"uniform-{b}-4096", "plan", k - 1, 10, -2.0, 30.6, 1.2),
        ]
    _write(tmp_path, "sparsify-pareto-4k", rows)
    lines = frontier_table(tmp_path).strip().splitlines()
    assert lines[0] == "| budget | duo | uniform |"
    assert lines[2] == "| 0.25 | 1/10 (-0.30) | 0/10 (-2.00) |"  # budgets sorted numerically
    assert lines[3] == "| 0.5 | 8/10 (-0.30) | 7/10 (-2.00) |"
    out = render_text("<!-- results:sparsify:frontier -->\n<!-- /results:sparsify:frontier -->", tmp_path)
    assert "| 0.5 | 8/10 (-0.30) | 7/10 (-2.00) |" in out
