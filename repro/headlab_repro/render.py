"""Markdown tables rendered from ``results/``, written between marker comments in README.md and docs/**/*.md
(the result pages live in docs/results/):

    <!-- results:NAME -->
    (generated: do not edit; `headlab reproduce --render`)
    <!-- /results:NAME -->

``NAME`` is a key of :data:`RENDERERS` (``lab``, ``steering``, ``lab-runs``, ``lab:EXPERIMENT``) or
``detail:CLAIM``, ``table:TABLE``, ``runs:TABLE`` for any registered claim / claim table.  :func:`stale_blocks` lists blocks whose text differs from what the results give (a test
fails on any).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from .claims import all_claims
from .evidence import label as evidence_label
from .record import results_root

MARK = re.compile(r"(<!-- results:(?P<name>[\w:.-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)
NOTE = "<!-- generated from results/ by `headlab reproduce --render`; do not edit by hand -->\n"


def _load(root: Path, name: str) -> dict | None:
    p = root / name / "result.json"
    return json.loads(p.read_text()) if p.exists() else None


def _raw(root: Path, res: dict) -> dict:
    f = res["files"]["raw"]
    return json.loads((root / res["name"] / f).read_text())


def _f(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 10:
        return f"{int(v)}"
    return f"{v:.{digits}g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.{digits}f}"


def num(x: dict, pct: bool = False, signed: bool = False) -> str:
    """'0.992 [0.985, 0.996] (1016/1024)' — the count always beside the number."""
    sc, dg = (100, 1) if pct else (1, 3)
    sg = "+" if signed else ""
    v = x.get("value")
    if v is None:
        return "–"
    s = f"{v * sc:{sg}.{dg}f}"
    if x.get("ci") and all(c is not None for c in x["ci"]):
        s += f" [{x['ci'][0] * sc:{sg}.{dg}f}, {x['ci'][1] * sc:{sg}.{dg}f}]"
    if "k" in x:
        s += f" ({x['k']}/{x['n']})"
    elif "n" in x:
        s += f" (n={x['n']})"
    if "mcnemar_p" in x:
        s += f", McNemar p={x['mcnemar_p']:.2g}"
    if isinstance(x.get("ran"), str):  # the backend that ran (kernel timings)
        s += f", ran {x['ran']}"
    return s


def _cost(s: float) -> str:
    return f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"


def outcome_word(res: dict) -> str:
    """'rule met' | 'rule not met' | 'invalid' (a timing run on a busy machine)."""
    if res.get("rule_met") is None:
        return "invalid"
    return "rule met" if res["rule_met"] else "rule not met"


def _outcome(res: dict) -> str:
    """'*exploratory* · **rule met**: conditions' — the evidence label (computed from the history, see
    :mod:`headlab_repro.evidence`) before every outcome."""
    ev = evidence_label(res)["evidence"]
    return f"*{ev}* · **{outcome_word(res)}**: " + "; ".join(
        c["text"] + ("" if c["passed"] else " — **fails**") for c in res["conditions"]
    )


def _table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def lab_table(root: Path) -> str:
    rows = []
    for c in all_claims().values():
        if c.table != "lab":
            continue
        res = _load(root, c.name)
        outcome = _outcome(res) if res else f"no committed result (`headlab reproduce {c.name}`, ~{_cost(c.cost_s)})"
        rows.append([f"`{c.name}`", f"{c.short} ({c.paper})", outcome])
    return _table(["experiment", "claim", "registered rule: outcome with the numbers (seed 0)"], rows)


def steering_table(root: Path) -> str:
    rows = []
    for c in all_claims().values():
        if c.table != "steering":
            continue
        res = _load(root, c.name)
        if res is None:
            rows.append(
                [
                    f"{c.short} ({c.paper})",
                    f"no committed result yet (`headlab reproduce {c.name}`, ~{_cost(c.cost_s)})",
                    "–",
                    f"`{c.name}`",
                ]
            )
            continue
        m = res["measured"]
        parts = []
        for k in c.show:
            if k in m:
                x = m[k]
                label = k.replace("_", " ")
                parts.append(f"{label}: {num(x, pct=True, signed='difference' in k or 'vs' in k)}")
        rows.append([f"{c.short} ({c.paper})", "; ".join(parts), _outcome(res), f"`{c.name}`"])
    return _table(
        [
            "paper claim",
            "measured (accuracy %, 95% Wilson / paired bootstrap intervals, items)",
            "registered rule: outcome",
            "`headlab reproduce`",
        ],
        rows,
    )


def claims_table(root: Path, table: str) -> str:
    """Generic table of every claim whose ``table`` is ``table``: its ``show`` numbers and the outcome."""
    rows = []
    for c in all_claims().values():
        if c.table != table:
            continue
        res = _load(root, c.name)
        if res is None:
            rows.append([f"{c.short or c.claim} ({c.paper})", f"no committed result (~{_cost(c.cost_s)})", "–", f"`{c.name}`"])
            continue
        m = res["measured"]
        shown = "; ".join(f"{k.replace('_', ' ')}: {num(m[k])}" for k in (c.show or m) if isinstance(m.get(k), dict))
        rows.append([f"{c.short or c.claim} ({c.paper})", shown, _outcome(res), f"`{c.name}`"])
    return _table(["claim", "measured [95% interval] (items)", "registered rule: outcome", "`headlab reproduce`"], rows)


def runs_table(root: Path, table: str) -> str:
    rows = []
    for c in all_claims().values():
        if c.table != table:
            continue
        res = _load(root, c.name)
        if res is None:
            rows.append(
                [f"`{c.name}`", f"`{c.command[0].format(out='results/' + c.name, results='results')}`", "–", "not run", "–", "–"]
            )
            continue
        rows.append(
            [
                f"`{c.name}`",
                "<br>".join(f"`{x}`" for x in res["command"]),
                f"{res['seconds']:.0f} s",
                f"{res['machine']['cpu']}, {res['machine']['torch_threads']} threads",
                outcome_word(res),
                evidence_label(res)["evidence"],
            ]
        )
    return _table(["result", "command", "wall", "machine", "outcome", "evidence"], rows)


def detail(root: Path, name: str) -> str:
    res = _load(root, name)
    if res is None:
        return f"No committed result: `headlab reproduce {name}`.\n"
    rows = [[k, num(v)] for k, v in res["measured"].items() if isinstance(v, dict) and "value" in v]
    lab = evidence_label(res)
    why = f" ({'; '.join(lab['why'])})" if lab["why"] else ""
    return (
        f"Command: {'; '.join(f'`{c}`' for c in res['command'])} ({res['seconds']:.0f} s, commit "
        f"`{(res['git_commit'] or '?')[:12]}`; rule registered in `{(lab['registered_commit'] or '?')[:12]}`).\n\n"
        f"Evidence: **{lab['evidence']}**{why}.\n\nRule: {res['rule']['text']}\n\n{_outcome(res)}.\n\n"
        + _table(["number", "value [95% interval] (items)"], rows)
    )


# ---------------------------------------------------------------- lab detail tables from the raw output
def _mc(root: Path, res: dict) -> str:
    m = _raw(root, res)["measured"]
    rows = [
        [
            d,
            _f(v["n50"], 1),
            _f(v.get("predicted_n50"), 1),
            _f(v["n50"] / int(d), 2),
            _f(v["acc_at_8dk"]),
            _f(v["softmax_acc_at_8dk"]),
        ]
        for d, v in m["by_dk"].items()
    ]
    return (
        _table(
            [
                "d_k",
                "N_50 (50 % recall)",
                "crosstalk prediction",
                "N_50 / d_k",
                "linear recall at N = 8·d_k",
                "softmax recall at N = 8·d_k (β = 16)",
            ],
            rows,
        )
        + f"\nLog-log slope of N_50 against d_k: {_f(m['n50_slope'])}.\n"
    )


def _icl(root: Path, res: dict) -> str:
    raw = _raw(root, res)
    m, c = raw["measured"], raw["config"]
    ls = [str(x) for x in c["test_lengths"]]
    rows = [
        [
            f"attention H = {h}",
            *[_f(v["test_mse"][n]) for n in ls],
            _f(v["kq_diag_ratio"], 3),
            _f(v["ov_zero_sum"]),
            ", ".join(f"{x:+.2f}" for x in v["ov_y"]),
        ]
        for h, v in m["models"].items()
    ]
    names = {"gd": "one-step GD, best scale", "bayes": "Bayes (ridge λ = σ²d)", "zero": "zero predictor"}
    rows += [[names[k], *[_f(m["baselines"][n][k]) for n in ls], "", "", ""] for k in ("gd", "bayes", "zero")]
    return (
        _table(["predictor", *[f"MSE n = {n}" for n in ls], "KQ diag / off-diag", "OV \\|Σ\\|/Σ\\|·\\|", "OV y-entries"], rows)
        + f"\nTest MSE on {m.get('test_sequences', 4096)} held-out sequences.\n"
    )


def _ind(root: Path, res: dict) -> str:
    m = _raw(root, res)["measured"]
    idx = list(range(0, len(m["step"]), max(1, len(m["step"]) // 10))) + [len(m["step"]) - 1]
    idx = sorted(set(idx))
    rows = [
        ["ICL accuracy", *[_f(m["icl_acc"][i], 2) for i in idx]],
        ["layer-2 induction score", *[_f(m["induction_score"][i], 2) for i in idx]],
        ["layer-1 previous-token score", *[_f(m["prev_token_score"][i], 2) for i in idx]],
        ["IWL accuracy", *[_f(m["iwl_acc"][i], 3) for i in idx]],
    ]
    return (
        _table(["step", *[str(m["step"][i]) for i in idx]], rows)
        + f"\nAbruptness {_f(m['abruptness'], 3)} (steepest rise ending at step {m.get('steepest_step')}); "
        f"90 % of the final gain reached at step {m.get('rise_end_step')}.\n"
    )


def _moh(root: Path, res: dict) -> str:
    m = _raw(root, res)["measured"]
    base = m["models"]["mha"]["val_loss"]
    rows = [
        [k, f"{v['active_fraction']:.1%}", _f(v["val_loss"]), _f(v["val_ppl"], 3), _f(v["val_loss"] / base)]
        for k, v in m["models"].items()
    ]
    tf = m["training_free_75"]
    h = _raw(root, res)["config"]["heads"]
    for k, label in (
        ("query_norm_router", "MHA + query-norm router, training-free"),
        ("random_heads", "MHA + random heads, training-free"),
    ):
        rows.append([label, f"{tf['active_heads'] / h:.1%}", _f(tf[k]), _f(math.exp(tf[k]), 3), _f(tf[k] / base)])
    return _table(["model", "active heads", "val loss (nats/byte)", "val ppl", "loss / MHA"], rows) + (
        f"\nValidation on {m.get('val_tokens', '?')} bytes.\n"
    )


def _sinks(root: Path, res: dict) -> str:
    m = _raw(root, res)["measured"]
    rows = [
        [
            k,
            _f(v["final_sink_rate"], 2),
            _f(v["final_first_token"]),
            _f(v["raw_first_token"][-1]),
            ", ".join(_f(x) for x in v["final_per_layer"]),
            _f(v["val_bpb"]),
        ]
        for k, v in m.items()
    ]
    return _table(
        ["mechanism", "Sink_1^0.3 (%)", "mean first-token share", "raw first-token weight", "per-layer share", "val bits/byte"],
        rows,
    )


def _sinks_dormant(root: Path, res: dict) -> str:
    """Pooled numbers per mechanism, the active/dormant split and each seed's Sink rate."""
    m = _raw(root, res)["measured"]
    seeds = [r["seed"] for r in next(iter(m.values())).get("by_seed", [])]
    rows = [
        [
            k,
            _f(v["final_sink_rate"], 2),
            ", ".join(_f(r["final_sink_rate"], 1) for r in v.get("by_seed", [])) or "–",
            _f(v["final_first_token"]),
            _f(v["raw_first_token"][-1]),
            _f(v.get("final_active_first_token", float("nan"))),
            _f(v.get("final_dormant_first_token", float("nan"))),
            _f(v["val_bpb"]),
        ]
        for k, v in m.items()
    ]
    per_seed = f"Sink_1^0.3 (%) seeds {', '.join(map(str, seeds))}" if seeds else "Sink_1^0.3 (%) per seed"
    return _table(
        [
            "mechanism",
            "Sink_1^0.3 (%)",
            per_seed,
            "mean first-token share",
            "raw first-token weight",
            "share, active queries",
            "share, dormant queries",
            "val bits/token",
        ],
        rows,
    )


LAB_DETAIL = {
    "memory-capacity": _mc,
    "icl-regression": _icl,
    "induction": _ind,
    "moh": _moh,
    "sinks": _sinks,
    "sinks-dormant": _sinks_dormant,
    "sinks-dormant-mlp": _sinks_dormant,
}


def _lab_detail(name: str) -> Callable[[Path], str]:
    def render(root: Path) -> str:
        res = _load(root, name)
        if res is None:
            return f"No committed result: `headlab reproduce {name}`.\n"
        return LAB_DETAIL[name](root, res)

    return render


RENDERERS: dict[str, Callable[[Path], str]] = {
    "lab": lab_table,
    "steering": steering_table,
    "lab-runs": lambda root: runs_table(root, "lab"),
    "steering-runs": lambda root: runs_table(root, "steering"),
    **{f"lab:{k}": _lab_detail(k) for k in LAB_DETAIL},
}


def render_block(name: str, root: Path | None = None) -> str:
    root = Path(root) if root is not None else results_root()
    all_claims()  # the *_claims modules may add their own blocks to RENDERERS (e.g. mechanism_claims)
    if name.startswith("detail:"):
        return detail(root, name.split(":", 1)[1])
    if name.startswith("table:"):
        return claims_table(root, name.split(":", 1)[1])
    if name.startswith("runs:"):
        return runs_table(root, name.split(":", 1)[1])
    if name not in RENDERERS:
        raise ValueError(
            f"unknown results block {name!r}; valid: {', '.join(sorted(RENDERERS))}, detail:CLAIM, table:TABLE, runs:TABLE"
        )
    return RENDERERS[name](root)


def render_text(text: str, root: Path | None = None) -> str:
    """``text`` with every marker block replaced by its rendering."""
    return MARK.sub(lambda m: m.group(1) + NOTE + render_block(m.group("name"), root) + m.group(4), text)


def doc_files(repo: Path) -> list[Path]:
    """README.md and every page under docs/ (the result pages are docs/results/*.md) that holds a marker block."""
    files = [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]
    return [f for f in files if f.exists() and MARK.search(f.read_text())]


def stale_blocks(repo: Path, root: Path | None = None) -> list[str]:
    """'FILE: block NAME' for every marker block whose text differs from its rendering."""
    out = []
    for f in doc_files(repo):
        text = f.read_text()
        for m in MARK.finditer(text):
            want = NOTE + render_block(m.group("name"), root)
            if m.group("body") != want:
                out.append(f"{f.relative_to(repo)}: block {m.group('name')}")
    return out


def render_files(repo: Path, root: Path | None = None) -> list[Path]:
    """Rewrite the marker blocks of README.md and docs/**/*.md in place (atomically); return the changed files."""
    from headlab.io import atomic_write_text

    changed = []
    for f in doc_files(repo):
        text = f.read_text()
        new = render_text(text, root)
        if new != text:
            atomic_write_text(f, new)
            changed.append(f)
    return changed
