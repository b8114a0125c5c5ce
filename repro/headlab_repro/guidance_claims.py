"""Claims of ``headlab steer headhunt`` (perturbed-attention guidance with HeadHunter-selected heads) on
SmolLM2-135M-Instruct; rule and size fixed here before the run.

Text adaptation of Ahn et al. (arXiv 2506.10978): guided next-token logits ``l + s·(l − l_perturbed)`` with
the selected heads SoftPAG-perturbed (``(1 − u)·A + u·I``); the heads are hunted greedily on a tuning split of
SST-2 (after a layer-level pre-screen), (u, s) chosen on the same split, accuracy reported on a disjoint split.
"""

from __future__ import annotations

from . import collect
from .claims import Claim, Tolerance, register

STEER = "steering"


def _summary(raw: dict) -> dict:
    run = raw["headhunt"]
    st = run["results"]["stats"]
    out = {k: st[k] for k in ("plain", "hunted", "hunted_vs_plain", "hunted_logp_vs_plain")}
    for r in range(run["n_random"]):
        out[f"random{r}"] = st[f"random{r}"]
        out[f"hunted_vs_random{r}"] = st[f"hunted_vs_random{r}"]
    out["heads"] = {"value": float(len(run["search"]["heads"])), "heads": run["search"]["heads"], "strength": run["strength"]}
    return out


def _rule(x: dict) -> list:
    d = x["hunted_vs_plain"]
    conds = [
        (
            f"guided (hunted heads) - plain = {d['value'] * 100:+.1f} points, 95% paired interval "
            f"[{d['ci'][0] * 100:+.1f}, {d['ci'][1] * 100:+.1f}] above 0 (n={d['n']})",
            d["ci"][0] > 0,
        )
    ]
    for k in sorted(k for k in x if k.startswith("hunted_vs_random")):
        r = x[k]
        conds.append(
            (
                f"guided (hunted) - guided ({k.removeprefix('hunted_vs_')}, as many random heads) = "
                f"{r['value'] * 100:+.1f} points, above 0",
                r["value"] > 0,
            )
        )
    return conds


register(
    Claim(
        name="headhunt-sst2",
        table=STEER,
        short="HeadHunter heads + SoftPAG guidance vs no guidance and vs random heads (SST-2)",
        claim="Guiding next-token logits away from a copy of the model whose HeadHunter-selected heads are "
        "SoftPAG-perturbed improves held-out task accuracy over no guidance and over as many random heads.",
        paper="HeadHunter / SoftPAG, Ahn et al., arXiv 2506.10978 (text adaptation)",
        command=(
            "headlab steer headhunt --task sst2 --tune-on 12 --eval-on 120 --seed 0 --rounds 2 --per-round 1 "
            "--u 1.0 --scale 1.0 --prescreen-layers 2 --u-grid 0.5,1 --s-grid 0.5,1,2,4 --n-random 2 "
            "--threads 2 --save {out}/headhunt.json",
        ),
        size={
            "task": "sst2",
            "tune_on": 12,
            "eval_on": 120,
            "seed": 0,
            "rounds": 2,
            "per_round": 1,
            "prescreen_layers": 2,
            "n_random": 2,
        },
        rule="on the 120 evaluation items (disjoint from the 12 tuning items): the 95% paired bootstrap interval of "
        "guided (hunted heads) - plain accuracy lies above 0; and guided accuracy with the hunted heads exceeds guided "
        "accuracy with each of 2 sets of as many random heads (each with its own (u, s) tuned on the same 12 items).",
        conditions=_rule,
        summarize=_summary,
        collect=collect.steer("headhunt"),
        cost_s=1200,
        tolerance=Tolerance("exact"),
        show=("plain", "hunted", "hunted_vs_plain", "random0", "random1"),
        notes="Search objective: mean log-probability of the gold label word among the choices under the guided "
        "logits. Layer pre-screen (ours, for CPU cost): each layer perturbed whole, the best 2 layers' heads hunted.",
    )
)
