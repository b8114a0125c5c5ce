"""Claims of ``headlab circuits`` on SmolLM2-135M-Instruct (docs/circuits.md): the IOI circuit, its reuse for
Colored Objects, and the first-order estimate of head importance.

- ``circuits-ioi``: the IOI behaviour is carried by a circuit of the classes of Wang et al. (arXiv 2211.00593):
  duplicate-token / induction heads that detect the repeated subject, S-inhibition heads, and name movers that
  copy the indirect object.
- ``circuits-reuse``: the heads of the IOI circuit are reused for Colored Objects (Merullo et al., arXiv
  2310.08744).
- ``circuits-importance``: the first-order Taylor estimate of a head's importance ranks heads like the
  measured effect of ablating them (Michel et al., arXiv 1905.10650).

Rules and sizes are fixed here, before the runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from .claims import Claim, Tolerance, number, register

TABLE = "circuits"
HEAD_CLASSES = (
    "in_circuit",
    "name_mover",
    "negative_name_mover",
    "s_inhibition",
    "induction",
    "duplicate_token",
    "previous_token",
)
ALPHA = 0.01  # significance of the overlap beyond chance
SHARED = 0.5  # reuse: a majority of the smaller in-circuit set is shared
RHO = 0.5  # importance: a large rank correlation (Cohen's 'large' effect size)


def _task(folder: Path) -> tuple[dict, list[dict]]:
    """(summary.json, heads.json records) of a ``headlab circuits ioi|colored-objects --out DIR`` folder."""
    summary = json.loads((folder / "summary.json").read_text())
    heads = json.loads((folder / "heads.json").read_text())["heads"]
    return summary, heads


def collect_ioi(out: Path) -> tuple[dict, list[dict], dict]:
    """``headlab circuits ioi --out DIR``: DIR/summary.json, heads.json, heads.csv, roles.json, effects.png."""
    out = Path(out)
    summary, heads = _task(out)
    raw = {
        "config": {"task": summary["task"], "model": summary["model"], "n": summary["n"], "seed": summary["meta"]["seed"]},
        "summary": summary,
        "heads": heads,
    }
    return raw, heads, {"raw": "summary.json", "plot": "effects.png", "records": "heads.json", "table": "heads.csv"}


def collect_reuse(out: Path) -> tuple[dict, list[dict], dict]:
    """OUT/ioi and OUT/colored-objects (``headlab circuits ioi|colored-objects``), OUT/reuse.json (``headlab circuits
    reuse``)."""
    out = Path(out)
    si, hi = _task(out / "ioi")
    sc, hc = _task(out / "colored-objects")
    reuse = json.loads((out / "reuse.json").read_text())
    raw = {
        "config": {
            "model": si["model"],
            "n_ioi": si["n"],
            "n_colored_objects": sc["n"],
            "seed": si["meta"]["seed"],
            "k": reuse["k"],
            "permutations": reuse["top_k"]["permutations"],
        },
        "ioi": si,
        "colored-objects": sc,
        "reuse": reuse,
    }
    records = [{"task": "ioi", **h} for h in hi] + [{"task": "colored-objects", **h} for h in hc]
    files = {
        "raw": "reuse.json",
        "plot": ["ioi/effects.png", "colored-objects/effects.png"],
        "records": ["ioi/heads.json", "colored-objects/heads.json"],
    }
    return raw, records, files


def collect_importance(out: Path) -> tuple[dict, list[dict], dict]:
    """``headlab circuits importance --out DIR``: DIR/summary.json, heads.json, importance.png."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())
    heads = json.loads((out / "heads.json").read_text())["heads"]
    raw = {
        "config": {"model": summary["model"], "n_texts": summary["n_texts"], "max_tokens": summary["max_tokens"]},
        "summary": summary,
        "heads": heads,
    }
    return raw, heads, {"raw": "summary.json", "plot": "importance.png", "records": "heads.json"}


def _baseline(s: dict, prefix: str) -> dict:
    from headlab.stats import proportion

    b, n = s["baseline"], s["n"]
    p = proportion(round(b["clean_accuracy"] * n), n)
    return {
        f"{prefix}clean_accuracy": number(p["value"], n=n, ci=p["ci"], k=p["k"], top1=b["clean_top1"]),
        f"{prefix}clean_logit_diff": number(b["clean_logit_diff"], n=n, std=b["clean_logit_diff_std"]),
        f"{prefix}corrupt_logit_diff": number(b["corrupt_logit_diff"], n=n),
    }


def summarize_ioi(raw: dict) -> dict:
    """Baseline (accuracy: IO's logit above S's on the clean prompts, Wilson 95 %; logit differences) and the
    number of heads in each class of ``headlab.circuits.classify`` (the heads in ``heads``)."""
    s = raw["summary"]
    out = _baseline(s, "")
    roles = s.get("roles", {})
    n_heads = len(raw["heads"])
    for c in HEAD_CLASSES:
        out[f"{c}_heads"] = number(len(roles.get(c, [])), n=n_heads, heads=sorted(roles.get(c, [])))
    return out


def rule_ioi(x: dict) -> list:
    a = x["clean_accuracy"]
    cls = {c: x[f"{c}_heads"] for c in HEAD_CLASSES}

    def named(c: str) -> str:
        v = cls[c]
        return f"{v['value']:.0f} ({', '.join(v['heads']) or 'none'})"

    ind = cls["induction"]["value"] + cls["duplicate_token"]["value"]
    return [
        (
            f"SmolLM2 does IOI: IO's logit above S's in {a['k']}/{a['n']} clean prompts, 95 % interval "
            f"[{a['ci'][0]:.3f}, {a['ci'][1]:.3f}] above 0.5",
            a["ci"][0] > 0.5,
        ),
        (f"name-mover heads: {named('name_mover')} >= 1", cls["name_mover"]["value"] >= 1),
        (f"S-inhibition heads: {named('s_inhibition')} >= 1", cls["s_inhibition"]["value"] >= 1),
        (
            f"induction or duplicate-token heads in the circuit: induction {named('induction')}, duplicate-token "
            f"{named('duplicate_token')}; >= 1",
            ind >= 1,
        ),
    ]


def summarize_reuse(raw: dict) -> dict:
    """Both baselines, and the overlap of the two tasks' heads: top-k by |effect| and in-circuit sets (intersection,
    Jaccard against random sets of the same sizes, hypergeometric p), Spearman of |effect| over all heads."""
    out = {**_baseline(raw["ioi"], "ioi_"), **_baseline(raw["colored-objects"], "colored_")}
    r = raw["reuse"]
    for key, label in (("top_k", "top_k"), ("in_circuit", "in_circuit")):
        t = r.get(key)
        if t is None:
            continue
        small = min(t["size_a"], t["size_b"])
        out[f"{label}_shared"] = number(
            t["intersection"],
            n=r["n_heads"],
            size_ioi=t["size_a"],
            size_colored=t["size_b"],
            expected=t["expected_intersection"],
            p_hypergeom=t["p_hypergeom"],
        )
        out[f"{label}_shared_fraction"] = number(t["intersection"] / small if small else float("nan"), n=small)
        out[f"{label}_jaccard"] = number(t["jaccard"], n=r["n_heads"], random=t["perm_mean_jaccard"], perm_p=t["perm_p"])
    out["spearman_abs_effect"] = number(r["spearman_abs_effect"], n=r["n_heads"], p=r["spearman_p"])
    return out


def rule_reuse(x: dict) -> list:
    ai, ac = x["ioi_clean_accuracy"], x["colored_clean_accuracy"]
    conds = [
        (
            f"SmolLM2 does IOI: {ai['k']}/{ai['n']} clean prompts right, 95 % interval [{ai['ci'][0]:.3f}, "
            f"{ai['ci'][1]:.3f}] above 1/2",
            ai["ci"][0] > 0.5,
        ),
        (
            f"SmolLM2 does Colored Objects: the answer beats both other colours in {ac['k']}/{ac['n']} clean prompts, 95 % "
            f"interval [{ac['ci'][0]:.3f}, {ac['ci'][1]:.3f}] above chance 1/3",
            ac["ci"][0] > 1 / 3,
        ),
    ]
    t = x["top_k_shared"]
    conds.append(
        (
            f"top-{t['size_ioi']} heads by |effect|: {t['value']:.0f} shared (random sets: {t['expected']:.2f}), "
            f"hypergeometric p = {t['p_hypergeom']:.2g} < {ALPHA}",
            t["p_hypergeom"] < ALPHA,
        )
    )
    c = x.get("in_circuit_shared")
    if c is None:
        conds.append(("the in-circuit sets were compared", False))
        return conds
    f = x["in_circuit_shared_fraction"]["value"]
    conds.append(
        (
            f"in-circuit sets ({c['size_ioi']} IOI, {c['size_colored']} Colored Objects heads): {c['value']:.0f} shared "
            f"(random sets: {c['expected']:.2f}), hypergeometric p = {c['p_hypergeom']:.2g} < {ALPHA}, and the shared "
            f"heads are {f:.2f} >= {SHARED} of the smaller set",
            c["p_hypergeom"] < ALPHA and f >= SHARED,  # NaN (an empty circuit) fails
        )
    )
    return conds


def summarize_importance(raw: dict) -> dict:
    """Rank and linear agreement of the Taylor estimate with the measured mean-ablation effects over all heads."""
    s, n = raw["summary"], len(raw["heads"])
    return {
        "spearman_delta_nll_vs_taylor": number(s["spearman_delta_nll_vs_taylor"], n=n),
        "spearman_kl_vs_abs_taylor": number(s["spearman_kl_vs_abs_taylor"], n=n),
        "pearson_delta_nll_vs_taylor": number(s["pearson_delta_nll_vs_taylor"], n=n),
        "base_nll": number(s["base_nll"], n=s["tokens"]),
    }


def rule_importance(x: dict) -> list:
    a, b = x["spearman_delta_nll_vs_taylor"], x["spearman_kl_vs_abs_taylor"]
    return [
        (
            f"the Taylor estimate ranks heads like the measured ΔNLL of mean-ablating them: Spearman {a['value']:.3f} "
            f">= {RHO} over {a['n']} heads",
            a["value"] >= RHO,
        ),
        (
            f"|Taylor| ranks heads like the measured KL of mean-ablating them: Spearman {b['value']:.3f} >= {RHO}",
            b["value"] >= RHO,
        ),
    ]


_EARLIER = (
    "Registered after an earlier, unregistered run whose outputs are kept in results/circuits/ (the numbers that "
    "docs/circuits.md quoted came from it); no number of that run is published."
)

register(
    Claim(
        name="circuits-ioi",
        table=TABLE,
        short="IOI in SmolLM2-135M has the circuit classes of GPT-2's: name movers, S-inhibition, induction / "
        "duplicate-token heads",
        claim="Indirect object identification is carried by a circuit of attention heads in classes: duplicate-token "
        "and induction heads detect the repeated subject, S-inhibition heads pass that on, and name-mover heads copy "
        "the indirect object to the output.",
        paper="Wang et al., Interpretability in the Wild, arXiv 2211.00593",
        command=("headlab circuits ioi --n 32 --seed 0 --threads 2 --out {out}",),
        smoke=("headlab circuits ioi --n 2 --seed 0 --threads 1 --out {out}",),
        size={"task": "ioi", "model": "smollm2-135m", "n": 32, "seed": 0},
        smoke_size={"task": "ioi", "n": 2},
        rule="On 32 IOI prompt pairs (8 templates, ABBA and BABA, ABC corruption; SmolLM2-135M-Instruct, fp32): the "
        "clean accuracy (IO's logit above S's) has a 95 % Wilson interval above 0.5, and the classifier of "
        "headlab.circuits.classify (thresholds in summary.json: |total effect| >= 0.05 in circuit; name mover: direct "
        "effect >= 0.05, attention END->IO >= 0.2 and > END->S2; S-inhibition: path effect into the name movers' queries "
        ">= 0.03 and attention END->S2 >= END->IO; induction: attention S2->S1+1 >= 0.1 and induction probe >= 0.3; "
        "duplicate token: attention S2->S1 >= 0.1) finds at least one name mover, at least one S-inhibition head and at "
        "least one induction or duplicate-token head.",
        conditions=rule_ioi,
        summarize=summarize_ioi,
        collect=collect_ioi,
        cost_s=900,
        smoke_cost_s=150,
        tolerance=Tolerance("abs", 1e-4),
        show=("clean_accuracy", "clean_logit_diff", "in_circuit_heads", "name_mover_heads", "s_inhibition_heads"),
        notes=_EARLIER + " Its cost there: 1143 s wall (5 min 44 s process CPU) on the shared, loaded 2-core CPU.",
    )
)


def _reuse_cmds(n_ioi: int, n_col: int, k: int, perms: int, threads: int) -> tuple[str, ...]:
    return (
        f"headlab circuits ioi --n {n_ioi} --seed 0 --threads {threads} --out {{out}}/ioi",
        f"headlab circuits colored-objects --n {n_col} --seed 0 --threads {threads} --out {{out}}/colored-objects",
        f"headlab circuits reuse {{out}}/ioi {{out}}/colored-objects --k {k} --permutations {perms} --out {{out}}/reuse.json",
    )


register(
    Claim(
        name="circuits-reuse",
        table=TABLE,
        short="SmolLM2-135M reuses its IOI heads for Colored Objects",
        claim="Circuit components are reused across tasks: the heads that carry IOI also carry the Colored Objects task.",
        paper="Merullo, Eickhoff, Pavlick, Circuit Component Reuse Across Tasks in Transformer Language Models, arXiv 2310.08744",
        command=_reuse_cmds(32, 16, 10, 10000, 2),
        smoke=_reuse_cmds(2, 2, 10, 1000, 1),
        size={"model": "smollm2-135m", "n_ioi": 32, "n_colored_objects": 16, "seed": 0, "k": 10, "permutations": 10000},
        smoke_size={"n_ioi": 2, "n_colored_objects": 2, "k": 10, "permutations": 1000},
        rule=f"IOI (32 prompt pairs) and Colored Objects (16 prompt pairs, colour-swapped corruption) on "
        f"SmolLM2-135M-Instruct: each task's clean accuracy has a 95 % Wilson interval above chance (IOI 1/2, Colored "
        f"Objects 1/3); the top-10 heads by |total effect| of the two tasks share more heads than random sets of 10 "
        f"among all heads (hypergeometric p < {ALPHA}); and the in-circuit sets (|total effect| >= 0.05) share more "
        f"heads than random sets of their sizes (hypergeometric p < {ALPHA}), the shared heads being at least "
        f"{SHARED} of the smaller set.",
        conditions=rule_reuse,
        summarize=summarize_reuse,
        collect=collect_reuse,
        cost_s=1800,
        smoke_cost_s=200,
        tolerance=Tolerance("abs", 1e-4),
        show=("colored_clean_accuracy", "top_k_shared", "in_circuit_shared", "in_circuit_shared_fraction", "spearman_abs_effect"),
        notes=_EARLIER + " The IOI run is repeated inside this claim (its own folder), so that the claim does not depend "
        "on another result (~6 min of CPU). Merullo et al. report 78 % of the in-circuit heads shared in GPT-2 Medium; "
        "a majority (0.5) is the threshold here.",
    )
)

register(
    Claim(
        name="circuits-importance",
        table=TABLE,
        short="The first-order Taylor estimate ranks heads like mean-ablating them (SmolLM2-135M, prose)",
        claim="The first-order Taylor expansion of the loss in a head's output estimates the head's importance: it "
        "ranks heads like the measured change when the head is ablated.",
        paper="Michel, Levy, Neubig, Are Sixteen Heads Really Better than One?, arXiv 1905.10650",
        command=("headlab circuits importance --n-texts 8 --max-tokens 48 --threads 2 --out {out}",),
        smoke=("headlab circuits importance --n-texts 1 --max-tokens 8 --threads 1 --out {out}",),
        size={"model": "smollm2-135m", "n_texts": 8, "max_tokens": 48},
        smoke_size={"n_texts": 1, "max_tokens": 8},
        rule=f"On 8 built-in prose texts of 48 tokens (SmolLM2-135M-Instruct, fp32), over all 270 heads each mean-ablated "
        f"alone: the Spearman correlation of the measured ΔNLL with the Taylor estimate Σ (μ − o)·∂NLL/∂o is >= {RHO}, "
        f"and that of the measured KL(p ‖ p_ablated) with |Taylor| is >= {RHO}.",
        conditions=rule_importance,
        summarize=summarize_importance,
        collect=collect_importance,
        cost_s=900,
        smoke_cost_s=60,
        tolerance=Tolerance("abs", 1e-3),
        show=("spearman_delta_nll_vs_taylor", "spearman_kl_vs_abs_taylor", "pearson_delta_nll_vs_taylor"),
        notes=_EARLIER + " That run used 4 texts of 32 tokens (283 s wall under load); this claim uses the command's "
        f"defaults, 8 texts of 48 tokens. {RHO} is Cohen's threshold of a large correlation.",
    )
)


# ---------------------------------------------------------------- top heads of a committed circuit run
def heads_table(root: Path, name: str, sub: str = "", k: int = 10) -> str:
    """The ``k`` heads with the largest |total effect| of claim ``name``'s run (``sub``: its task folder)."""
    from .render import _f, _load, _table

    res = _load(root, name)
    if res is None:
        return f"No committed result: `headlab reproduce {name}`.\n"
    heads = json.loads((root / name / sub / "heads.json").read_text())["heads"]
    top = sorted(heads, key=lambda h: -abs(h["effect"] or 0.0))[:k]
    attn = [c for c in heads[0] if c.startswith("attn_END_to_")]
    rows = [
        [
            h["site"],
            _f(h["effect"]),
            _f(h["direct"]),
            *[_f(h[c]) for c in attn],
            ", ".join(r for r in h["roles"] if r != "in_circuit") or ("in circuit" if "in_circuit" in h["roles"] else ""),
        ]
        for h in top
    ]
    return _table(["head", "total effect", "direct effect", *[c.replace("attn_", "attention ") for c in attn], "class"], rows)


def _hook() -> None:
    from .render import RENDERERS

    RENDERERS["circuits:ioi-heads"] = lambda root: heads_table(root, "circuits-ioi")
    RENDERERS["circuits:colored-heads"] = lambda root: heads_table(root, "circuits-reuse", "colored-objects")


_hook()
