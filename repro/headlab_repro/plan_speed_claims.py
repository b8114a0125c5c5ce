"""Claim of ``headlab bench plan``: the shipped 8K per-head plan's prefill against dense and against its ideal.

The ideal of a plan is what its sparsity allows on the same machine: the dense forward's time outside the
attention calls plus the plan's kept share of attention work times the dense forward's time inside them, both
from a profile of the same dense forward (:func:`headlab.bench.plan_speed.ideal_plan`). Efficiency = ideal /
measured plan prefill; speedup = dense / plan prefill. The rule and size are fixed here before any run.
"""

from __future__ import annotations

import math

from . import collect
from .claims import Claim, Tolerance, number, register

BENCH = "bench"

#: rule of ``bench-plan-8k``, fixed before any run (issue "Fast by default", item 3): medians over the rounds
PLAN_EFFICIENCY = 0.85  # ideal / measured plan prefill
PLAN_SPEEDUP = 1.4  # dense prefill / plan prefill
PLAN_FILE = "duo-0.35-8192.json"  # the shipped 8K plan, in the committed results' sparsify-plans/

_collect_plan = collect.paired("plan")  # DIR/plan.json, plan.records.jsonl, plan.png, table.md


def _summary_plan(raw: dict) -> dict:
    out = {}
    reps = raw["config"]["repeats"]
    for n, r in raw["lengths"].items():
        e, s = r["efficiency"], r["speedup"]
        out[f"efficiency@{n}"] = number(
            e["median"], n=reps, range=[e["min"], e["max"]], of_medians=r["efficiency_of_medians"], kept=r["kept"]
        )
        out[f"speedup@{n}"] = number(s["median"], n=reps, range=[s["min"], s["max"]], of_medians=r["speedup_of_medians"])
        out[f"kept@{n}"] = number(r["kept"])
        a = r["attention_share"]
        out[f"attention_share@{n}"] = number(a["median"], n=reps, range=[a["min"], a["max"]])
        for mode in ("dense", "plan"):
            t = r["seconds"][mode]
            out[f"{mode}_s@{n}"] = number(t["median"], n=reps, range=[t["min"], t["max"]])
            t = r["attention_s"][mode]
            out[f"{mode}_attention_s@{n}"] = number(t["median"], n=reps, range=[t["min"], t["max"]])
        out[f"ideal_s@{n}"] = number(r["ideal_at_medians"]["ideal_s"], n=reps)
        g = r["gap_s"]
        out[f"gap_s@{n}"] = number(g["total"], attention=g["attention"], other=g["other"])
    return out


def _rule_plan(x: dict) -> list:
    conds = []
    for n in sorted({int(k.split("@")[1]) for k in x if k.startswith("efficiency@")}):
        e, s = x[f"efficiency@{n}"], x[f"speedup@{n}"]
        conds.append(
            (
                f"{n} tokens: ideal / measured plan prefill {e['value']:.3f} (median of {e['n']} rounds, range "
                f"{e['range'][0]:.3f}-{e['range'][1]:.3f}; kept share {e['kept']:.3f}; >= {PLAN_EFFICIENCY})",
                not math.isnan(e["value"]) and e["value"] >= PLAN_EFFICIENCY,
            )
        )
        conds.append(
            (
                f"{n} tokens: dense / plan prefill {s['value']:.2f}x (median of {s['n']} rounds, range "
                f"{s['range'][0]:.2f}-{s['range'][1]:.2f}x; >= {PLAN_SPEEDUP}x)",
                not math.isnan(s["value"]) and s["value"] >= PLAN_SPEEDUP,
            )
        )
    return conds


register(
    Claim(
        name="bench-plan-8k",
        table=BENCH,
        short="Per-head plan prefill vs dense and vs its ideal (dense other time + kept share x dense attention time), "
        "shipped duo 0.35 plan, SmolLM2, 8192 tokens",
        claim=(
            f"A heterogeneous per-head plan prefills within {round((1 - PLAN_EFFICIENCY) * 100)} % of its ideal (the "
            "dense forward's time outside attention plus the plan's kept share of its attention time, from a profile "
            f"of the same forward), so that the shipped 8K plan prefills at least {PLAN_SPEEDUP}x faster than dense."
        ),
        paper=(
            "headlab's target for per-head plans (issue 'Fast by default', item 3); DuoAttention arXiv 2410.10819, "
            "MoA arXiv 2406.14909"
        ),
        command=(
            f"headlab bench plan --plan {{results}}/sparsify-plans/{PLAN_FILE} --length 8192 --repeats 5 "
            "--model smollm2-135m --threads 2 --out {out}",
        ),
        size={"plan": PLAN_FILE, "length": 8192, "repeats": 5, "threads": 2},
        smoke=(
            f"headlab bench plan --plan {{results}}/sparsify-plans/{PLAN_FILE} --length 256 --repeats 2 "
            "--model smollm2-135m --threads 2 --out {out}",
        ),
        smoke_size={"plan": PLAN_FILE, "length": 256, "repeats": 2, "threads": 2},
        rule=(
            f"At 8192 tokens, over 5 alternating (dense, plan) rounds after one warm-up each: the median over rounds "
            f"of ideal / measured plan prefill is >= {PLAN_EFFICIENCY}, where a round's ideal is its dense prefill "
            "time minus the time inside attention calls (measured in the same forward by wrapping the model's "
            "AttentionInterface function) plus the plan's kept share of attention work (HeadPlan.density at 8192: "
            "kept causal (query, key) pairs / causal pairs, averaged over layers x heads) times that attention time; "
            f"AND the median over rounds of dense / plan prefill is >= {PLAN_SPEEDUP}. SmolLM2-135M-Instruct, fp32, "
            f"2 threads, the shipped plan {PLAN_FILE} attached with attach(model, pattern=plan); the forward is "
            "model(input_ids, use_cache=False, logits_to_keep=1) on the built-in prose, as sparsify eval's prefill "
            "speedups time it; every forward must make one attention call per layer."
        ),
        conditions=_rule_plan,
        summarize=_summary_plan,
        collect=_collect_plan,
        cost_s=900,
        smoke_cost_s=60,
        tolerance=Tolerance("ratio", 0.25),
        show=("efficiency@8192", "speedup@8192", "kept@8192", "attention_share@8192"),
        notes=(
            "Expected to fail when registered: today the plan keeps about 47 % of the attention work but prefills "
            "only about 1.20x faster than dense (sparsify-plans-8k); meeting this rule is the target of the issue "
            "'Fast by default', item 3. The gap_s numbers say where the plan loses against its ideal: inside the "
            "attention calls (kernels and headlab's dispatch) or outside them. Timings on a shared 2-core CPU: run "
            "alone, when the machine is otherwise idle (load < 1.5); plan.json records the load averages before and "
            "after and the CPU other processes used during the rounds. The smoke size (256 tokens, 2 rounds) only "
            "checks that the command runs: its numbers carry no meaning."
        ),
    )
)
