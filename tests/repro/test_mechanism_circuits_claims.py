"""The claims of ``headlab bench mechanisms`` and ``headlab circuits`` (mechanism_claims.py, circuits_claims.py):
their summaries and rules on hand-built outputs, their collectors and size checks, and their rendered tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from headlab_repro import circuits_claims as CC
from headlab_repro import claims as C
from headlab_repro import mechanism_claims as MC
from headlab_repro.render import render_block
from headlab_repro.runner import check_size

MECH = ("mechanisms-speed", "mechanisms-mqar", "mechanisms-selective-copy", "mechanisms-miras-prose")
CIRC = ("circuits-ioi", "circuits-reuse", "circuits-importance")


def test_registry_lists_the_claims_with_commands_smokes_and_tables():
    reg = C.all_claims()
    for name in MECH + CIRC:
        c = reg[name]
        assert c.table == (MC.TABLE if name in MECH else CC.TABLE)
        assert c.command and c.smoke and all(x.startswith("headlab ") for x in c.command + c.smoke)
        assert "arXiv" in c.paper and "unregistered" in c.notes
        assert c.cost_s > c.smoke_cost_s > 0


# ---------------------------------------------------------------- speed
def _speed_raw(slopes: dict[str, float], faster: set[str]) -> dict:
    """Points t = c * L^slope at 256..4096 for SDPA (slope 2) and each linear-time kernel; ``faster``: entries whose
    efficiency row records a measured crossing at 2048."""
    lengths = [256, 512, 1024, 2048, 4096]
    points = [
        {"entry": e, "level": "kernel", "pattern": "causal-self", "length": n, "seconds": 1e-6 * n**b}
        for e, b in {"sdpa": 2.0, **slopes}.items()
        for n in lengths
    ]
    points.append({"entry": "sdpa", "level": "kernel", "pattern": "noncausal-self", "length": 1024, "seconds": 9.0})
    eff = [
        {
            "entry": e,
            "level": "kernel",
            "pattern": "causal-self",
            "measured": 2048 if e in faster else None,
            "fitted": 1500.0,
            "note": "",
        }
        for e in slopes
    ]
    return {"points": points, "efficiency": eff, "stops": {}}


def test_speed_rule_passes_for_linear_kernels_and_fails_for_a_quadratic_one():
    lin = dict.fromkeys(MC.LINEAR_TIME, 1.0)
    x = MC.summarize_speed(_speed_raw(lin, set(MC.LINEAR_TIME)))
    assert x["sdpa.slope"]["value"] == pytest.approx(2.0) and x["sdpa.slope"]["n"] == 5
    assert x["ssm.slope"]["value"] == pytest.approx(1.0) and x["ssm.efficiency_length"]["value"] == 2048
    assert C.get("mechanisms-speed").judge(x)["rule_met"]

    bad = {**lin, "ssm": 2.0}  # quadratic
    conds = dict(MC.rule_speed(MC.summarize_speed(_speed_raw(bad, set(MC.LINEAR_TIME)))))
    failed = [t for t, ok in conds.items() if not ok]
    assert len(failed) == 1 and failed[0].startswith("ssm: time ∝ L^2.00")

    never = MC.summarize_speed(_speed_raw(lin, set(MC.LINEAR_TIME) - {"window(256)"}))
    assert math.isnan(never["window(256).efficiency_length"]["value"])
    failed = [t for t, ok in MC.rule_speed(never) if not ok]
    assert len(failed) == 1 and "never at a length both ran" in failed[0]


# ---------------------------------------------------------------- quality
def _quality_raw(acc: dict[tuple[str, str], float], loss: dict[str, float]) -> dict:
    n = {"mqar": 3072, "selective-copy": 2048}
    rows = [{"task": t, "mechanism": m, "accuracy": a, "loss": 1.0, "positions": n[t]} for (t, m), a in acc.items()] + [
        {"task": "prose", "mechanism": m, "accuracy": 0.3, "loss": v, "perplexity": math.exp(v), "positions": 16384}
        for m, v in loss.items()
    ]
    return {"quality": rows, "config": {"mechanisms": list(loss)}}


def _accs(values: dict[str, float], task: str) -> dict:
    return {(t, m): (values[m] if t == task else 0.1) for t in ("mqar", "selective-copy") for m in values}


def test_mqar_rule():
    mechs = ("softmax", *MC.RECURRENT)
    good = {m: 0.04 for m in mechs} | {"softmax": 0.5}
    x = MC.summarize_quality(_quality_raw(_accs(good, "mqar"), dict.fromkeys(mechs, 2.0)))
    s = x["mqar.softmax.accuracy"]
    assert (s["k"], s["n"], s["value"]) == (1536, 3072, 0.5) and s["ci"][0] < 0.5 < s["ci"][1]
    assert C.get("mechanisms-mqar").judge(x)["rule_met"]
    bad = good | {"linear": 0.49}  # intervals overlap with softmax's
    x = MC.summarize_quality(_quality_raw(_accs(bad, "mqar"), dict.fromkeys(mechs, 2.0)))
    failed = [t for t, ok in MC.rule_mqar(x) if not ok]
    assert len(failed) == 1 and "above linear" in failed[0]


def test_selective_copy_rule():
    mechs = ("softmax", "ssm", "no-mix")
    ok = {"softmax": 0.8, "ssm": 0.77, "no-mix": 0.1}
    x = MC.summarize_quality(_quality_raw(_accs(ok, "selective-copy"), dict.fromkeys(mechs, 2.0)))
    assert [b for _, b in MC.rule_copy(x)] == [True, True]
    low = ok | {"ssm": 0.7}  # above no mixing, but more than 0.05 below softmax
    x = MC.summarize_quality(_quality_raw(_accs(low, "selective-copy"), dict.fromkeys(mechs, 2.0)))
    assert [b for _, b in MC.rule_copy(x)] == [True, False]
    assert not C.get("mechanisms-selective-copy").judge(x)["rule_met"]


def test_miras_prose_rule():
    mechs = (*MC.MIRAS_REFS, *MC.MIRAS_NEW)
    refs = {"softmax": 2.6, "linear": 2.62, "delta": 2.31}
    acc = _accs(dict.fromkeys(mechs, 0.2), "mqar")
    x = MC.summarize_quality(_quality_raw(acc, refs | {"moneta": 2.30, "yaad": 2.29, "memora": 2.305}))
    assert x["prose.delta.loss"]["n"] == 16384 and x["prose.delta.loss"]["perplexity"] == pytest.approx(math.exp(2.31))
    assert C.get("mechanisms-miras-prose").judge(x)["rule_met"]
    x = MC.summarize_quality(_quality_raw(acc, refs | {"moneta": 2.30, "yaad": 2.29, "memora": 2.46}))
    assert [ok for _, ok in MC.rule_miras(x)] == [True, True, False]
    assert set(mechs) == {k.split(".")[1] for k in x}


# ---------------------------------------------------------------- circuits
def _summary(task: str, n: int, acc: float, roles: dict) -> dict:
    b = {
        "clean_accuracy": acc,
        "clean_top1": acc,
        "clean_logit_diff": 3.0,
        "clean_logit_diff_std": 1.0,
        "corrupt_logit_diff": 0.1,
    }
    return {"task": task, "model": "smollm2-135m", "n": n, "baseline": b, "roles": roles, "meta": {"seed": 0}}


def _heads(n: int = 270) -> list[dict]:
    return [
        {"layer": i // 9, "head": i % 9, "site": f"L{i // 9}H{i % 9}", "effect": 0.0, "direct": 0.0, "roles": []}
        for i in range(n)
    ]


def test_ioi_rule():
    roles = {
        "in_circuit": ["L1H1", "L2H2", "L3H3"],
        "name_mover": ["L3H3"],
        "s_inhibition": ["L2H2"],
        "duplicate_token": ["L1H1"],
    }
    x = CC.summarize_ioi({"summary": _summary("ioi", 32, 30 / 32, roles), "heads": _heads()})
    assert x["clean_accuracy"]["k"] == 30 and x["clean_accuracy"]["ci"][0] > 0.5
    assert x["name_mover_heads"]["value"] == 1 and x["induction_heads"]["value"] == 0 and x["in_circuit_heads"]["n"] == 270
    assert C.get("circuits-ioi").judge(x)["rule_met"]
    no_si = {k: v for k, v in roles.items() if k != "s_inhibition"}
    x = CC.summarize_ioi({"summary": _summary("ioi", 32, 30 / 32, no_si), "heads": _heads()})
    assert [ok for _, ok in CC.rule_ioi(x)] == [True, True, False, True]
    x = CC.summarize_ioi({"summary": _summary("ioi", 32, 18 / 32, roles), "heads": _heads()})  # near chance
    assert [ok for _, ok in CC.rule_ioi(x)] == [False, True, True, True]


def _reuse(inter_top: int, p_top: float, inter_c: int, p_c: float, size_c: tuple[int, int] = (10, 15)) -> dict:
    def ov(a, b, i, p):
        return {
            "size_a": a,
            "size_b": b,
            "intersection": i,
            "jaccard": i / (a + b - i) if a + b - i else 0.0,
            "expected_intersection": a * b / 270,
            "p_hypergeom": p,
            "perm_mean_jaccard": 0.02,
            "perm_p": p,
            "permutations": 100,
        }

    return {
        "k": 10,
        "n_heads": 270,
        "top_k": ov(10, 10, inter_top, p_top),
        "in_circuit": ov(*size_c, inter_c, p_c),
        "spearman_abs_effect": 0.3,
        "spearman_p": 0.01,
    }


def _reuse_raw(reuse: dict, col_acc: float = 12 / 16) -> dict:
    return {
        "ioi": _summary("ioi", 32, 30 / 32, {}),
        "colored-objects": _summary("colored-objects", 16, col_acc, {}),
        "reuse": reuse,
    }


def test_reuse_rule():
    x = CC.summarize_reuse(_reuse_raw(_reuse(8, 1e-9, 6, 1e-6)))
    assert x["in_circuit_shared_fraction"]["value"] == pytest.approx(0.6) and x["top_k_shared"]["value"] == 8
    assert C.get("circuits-reuse").judge(x)["rule_met"]
    x = CC.summarize_reuse(_reuse_raw(_reuse(8, 1e-9, 4, 1e-4)))  # significant, but 4/10 < a majority
    assert [ok for _, ok in CC.rule_reuse(x)] == [True, True, True, False]
    x = CC.summarize_reuse(_reuse_raw(_reuse(1, 0.3, 0, 1.0, (0, 3)), col_acc=6 / 16))  # empty circuit, chance task
    assert math.isnan(x["in_circuit_shared_fraction"]["value"])
    assert [ok for _, ok in CC.rule_reuse(x)] == [True, False, False, False]


def test_importance_rule():
    s = {
        "spearman_delta_nll_vs_taylor": 0.8,
        "spearman_kl_vs_abs_taylor": 0.55,
        "pearson_delta_nll_vs_taylor": 0.6,
        "base_nll": 3.9,
        "tokens": 384,
    }
    x = CC.summarize_importance({"summary": s, "heads": _heads()})
    assert x["spearman_kl_vs_abs_taylor"]["n"] == 270 and x["base_nll"]["n"] == 384
    assert C.get("circuits-importance").judge(x)["rule_met"]
    x = CC.summarize_importance({"summary": s | {"spearman_kl_vs_abs_taylor": 0.45}, "heads": _heads()})
    assert [ok for _, ok in CC.rule_importance(x)] == [True, False]


# ---------------------------------------------------------------- collectors, sizes, rendering
def _bench_json(quality: bool, steps: int = 300) -> dict:
    rows = [
        {"task": "mqar", "mechanism": m, "accuracy": 0.1, "loss": 1.0, "positions": 10, "seconds": 1.0}
        for m in ("softmax", "ssm", "no-mix")
    ]
    return {
        "command": "x",
        "seed": 0,
        "quick": False,
        "repeats": 1,
        "time_cap_s": 2.0,
        "mem_cap_gib": 4.0,
        "threads": 1,
        "budget": {"steps": steps},
        "lengths": [256],
        "points": [],
        "stops": {},
        "efficiency": [],
        "quality": rows if quality else [],
    }


def test_bench_collector_records_the_size_and_refuses_another(tmp_path):
    (tmp_path / "mechanisms.json").write_text(json.dumps(_bench_json(True)))
    raw, _, files = MC.collect_bench(tmp_path)
    assert raw["config"]["mechanisms"] == ["softmax", "ssm", "no-mix"] and files["raw"] == "mechanisms.json"
    check_size(C.get("mechanisms-selective-copy"), raw, smoke=False)
    (tmp_path / "mechanisms.json").write_text(json.dumps(_bench_json(True, steps=150)))
    with pytest.raises(RuntimeError, match="steps=150"):
        check_size(C.get("mechanisms-selective-copy"), MC.collect_bench(tmp_path)[0], smoke=False)
    with pytest.raises(RuntimeError, match="mechanisms="):
        check_size(C.get("mechanisms-mqar"), raw, smoke=False)


def test_circuit_collectors_and_the_heads_table(tmp_path):
    run = tmp_path / "results" / "circuits-ioi"
    run.mkdir(parents=True)
    heads = _heads()
    heads[5] |= {"effect": -0.4, "direct": -0.2, "attn_END_to_IO": 0.7, "roles": ["in_circuit", "negative_name_mover"]}
    heads[7] |= {"effect": 0.9, "direct": 0.5, "attn_END_to_IO": 0.1, "roles": ["in_circuit"]}
    for h in heads:
        h.setdefault("attn_END_to_IO", 0.0)
    (run / "heads.json").write_text(json.dumps({"heads": heads}))
    (run / "summary.json").write_text(json.dumps(_summary("ioi", 32, 1.0, {"in_circuit": ["L0H5", "L0H7"]})))
    raw, records, _ = CC.collect_ioi(run)
    assert len(records) == 270 and raw["config"] == {"task": "ioi", "model": "smollm2-135m", "n": 32, "seed": 0}
    check_size(C.get("circuits-ioi"), raw, smoke=False)
    with pytest.raises(RuntimeError, match="n=32"):
        check_size(C.get("circuits-ioi"), raw, smoke=True)
    root = tmp_path / "results"
    assert "No committed result" in render_block("circuits:ioi-heads", root)
    (run / "result.json").write_text(json.dumps({"name": "circuits-ioi"}))
    lines = render_block("circuits:ioi-heads", root).splitlines()
    assert lines[0].startswith("| head | total effect | direct effect | attention END_to_IO | class |")
    assert lines[2].startswith("| L0H7 | 0.900 | 0.500 |") and lines[2].endswith("| in circuit |")
    assert lines[3].startswith("| L0H5 | -0.400 |") and "negative_name_mover" in lines[3] and len(lines) == 12


def test_speed_table_renders_every_linear_kernel(tmp_path):
    root = tmp_path / "results"
    assert "No committed result" in render_block("mechanisms:speed", root)
    x = MC.summarize_speed(_speed_raw(dict.fromkeys(MC.LINEAR_TIME, 1.0), {"ssm"}))
    (root / "mechanisms-speed").mkdir(parents=True)
    (root / "mechanisms-speed" / "result.json").write_text(json.dumps({"measured": x}))
    out = render_block("mechanisms:speed", root)
    assert "| sdpa | 2.000 | 4096 | baseline | baseline |" in out
    assert "| ssm | 1.000 | 4096 | 2048 | 1500 |" in out and "| window(256) | 1.000 | 4096 | – | 1500 |" in out


def test_committed_smoke_results_are_judged_by_the_registered_rules():
    root = Path(__file__).resolve().parents[2] / "results"
    for name in MECH + CIRC:
        p = root / name / "smoke" / "result.json"
        if not p.exists():
            continue
        res = json.loads(p.read_text())
        assert res["smoke"] and res["size"] == C.get(name).smoke_size
        assert C.get(name).judge(res["measured"])["verdict"] == res["verdict"]
