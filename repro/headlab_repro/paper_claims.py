"""Claims of the papers that had tested code but no measured claim (issue "Every in-scope paper measured"): Pointer
Networks, Efficient Probing, PoNet, Faster Neighborhood Attention, HaloNet, the Dynamical Systems Framework, AttSets
and MLTP.

Each rule states what its paper claims in a form that can fail; size, data and seeds are fixed here before any run.
The paper's own headline number is recorded beside ours twice: in ``notes`` (with the full run's expected duration
and the power of its test) and as a ``paper`` field on the matching measured number, which the paper table shows
next to ours.  The table itself (``docs/papers.json`` + the registry + ``results/``) is rendered into
``docs/papers.md`` by the ``<!-- results:papers -->`` block this module registers.  The three timing claims
(``ponet-speed``, ``neighborhood-speed``, ``halo-speed``; the last two share one run) need an otherwise idle machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import collect
from .claims import Claim, Tolerance, all_claims, number, register

TABLE = "papers"
ALPHA = 0.05


def _m(raw: dict) -> dict:
    return raw["measured"]


def _acc(block: dict) -> dict:
    """A stored accuracy block ({value, ci, n, k, mcnemar_p?}) as a headline number."""
    extra = {k: block[k] for k in ("k", "mcnemar_p", "only_this", "only_base") if k in block}
    return number(block["value"], n=block["n"], ci=block.get("ci"), **extra)


def _fin(x: float) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


# ---------------------------------------------------------------- pointer-hull
#: the paper's Table 1 (convex hull, beam search, 512 LSTM units, 1M training examples), beside ours
PTR_PAPER = {
    "ptr_acc_trained": "72.6 % (Ptr-Net trained and tested at n = 50; 69.6 % trained on 5-50)",
    "s2s_acc_trained": "38.9 % (LSTM + attention, trained and tested at n = 50)",
    "ptr_acc_2x": "50.3 % (trained on 5-50, tested at n = 100)",
    "ptr_area_2x": "99.9 % (trained on 5-50, tested at n = 100)",
}
PTR_TRAINED_ACC = 0.5  # Ptr-Net exact-hull accuracy at the longest trained n
PTR_KEEP = 0.5  # accuracy at twice that n / accuracy at n (the paper: 50.3 / 69.6 = 0.72)
PTR_AREA, PTR_INVALID = 0.9, 0.2


def _ptr_summary(raw: dict) -> dict:
    from headlab.stats import mcnemar_exact, proportion

    m, c = _m(raw), raw["config"]
    trained, longest = str(c["n_max"]), str(max(c["test_n"]))
    if trained not in m["models"]["ptr_net"]["by_n"]:
        raise ValueError(f"pointer-hull: test_n {c['test_n']} must include n_max = {trained}")
    out = {}
    for key, label in (("ptr_net", "ptr"), ("seq2seq_attention", "s2s")):
        for n in (str(x) for x in c["test_n"]):
            ev = m["models"][key]["by_n"][n]
            out[f"{label}_acc@{n}"] = number(**proportion(sum(ev["correct"]), len(ev["correct"])))
            out[f"{label}_area@{n}"] = number(ev["area_coverage"], n=len(ev["correct"]), invalid=ev["invalid"])
    out[f"ptr_acc@{trained}"]["paper"] = PTR_PAPER["ptr_acc_trained"]
    out[f"s2s_acc@{trained}"]["paper"] = PTR_PAPER["s2s_acc_trained"]
    out[f"ptr_acc@{longest}"]["paper"] = PTR_PAPER["ptr_acc_2x"]
    out[f"ptr_area@{longest}"]["paper"] = PTR_PAPER["ptr_area_2x"]
    for n in (trained, longest):
        a, b = m["models"]["ptr_net"]["by_n"][n]["correct"], m["models"]["seq2seq_attention"]["by_n"][n]["correct"]
        mc = mcnemar_exact(a, b)
        out[f"ptr_minus_s2s@{n}"] = number(
            (sum(a) - sum(b)) / len(a), n=len(a), mcnemar_p=mc.pvalue, only_ptr=mc.only_a, only_s2s=mc.only_b, length=int(n)
        )
    out["lengths"] = number(int(trained), trained=int(trained), longest=int(longest))
    return out


def _ptr_rule(x: dict) -> list:
    trained, longest = x["lengths"]["trained"], x["lengths"]["longest"]
    acc_t, s2s_t = x[f"ptr_acc@{trained}"]["value"], x[f"s2s_acc@{trained}"]["value"]
    d = x[f"ptr_minus_s2s@{trained}"]
    acc_l, area = x[f"ptr_acc@{longest}"]["value"], x[f"ptr_area@{longest}"]
    keep = acc_l / acc_t if acc_t > 0 else float("nan")
    return [
        (
            f"Ptr-Net exact-hull accuracy at n = {trained} (the longest trained) {acc_t:.3f} >= {PTR_TRAINED_ACC}",
            acc_t >= PTR_TRAINED_ACC,
        ),
        (
            f"at n = {trained} Ptr-Net accuracy {acc_t:.3f} > seq2seq + attention {s2s_t:.3f}, exact McNemar p = "
            f"{d['mcnemar_p']:.2g} < {ALPHA} ({d['only_ptr']} vs {d['only_s2s']} discordant)",
            acc_t > s2s_t and d["mcnemar_p"] < ALPHA,
        ),
        (
            f"at n = {longest} (beyond training) Ptr-Net keeps {keep:.2f} of its n = {trained} accuracy ({acc_l:.3f}; "
            f">= {PTR_KEEP}), its simple-polygon outputs cover {area['value']:.3f} of the hull's area (>= {PTR_AREA}) and "
            f"{area['invalid']:.3f} of its outputs are not simple polygons (<= {PTR_INVALID})",
            _fin(keep)
            and keep >= PTR_KEEP
            and _fin(area["value"])
            and area["value"] >= PTR_AREA
            and area["invalid"] <= PTR_INVALID,
        ),
    ]


register(
    Claim(
        name="pointer-hull",
        table=TABLE,
        short="Ptr-Net beats seq2seq + attention on convex hulls and keeps its accuracy beyond its training lengths",
        claim="A pointer network, whose attention over the input positions is its output distribution, learns planar "
        "convex hulls from examples and generalises to more points than it was trained on, improving over "
        "sequence-to-sequence with input attention, whose output dictionary is fixed.",
        paper="Vinyals, Fortunato, Jaitly, NeurIPS 2015, arXiv 1506.03134",
        command=("headlab lab pointer-hull --steps 5000 --batch 64 --hidden 128 --seed 0 --threads 1 --out {out}",),
        smoke=("headlab lab pointer-hull --smoke --out {out}",),
        size={
            "steps": 5000,
            "batch": 64,
            "hidden": 128,
            "lr": 1e-3,
            "n_min": 5,
            "n_max": 10,
            "test_n": [10, 20],
            "test_items": 1000,
            "seed": 0,
        },
        smoke_size={"steps": 3, "batch": 8, "hidden": 16, "n_min": 4, "n_max": 6, "test_n": [6, 12], "test_items": 16},
        rule="trained on n in [5, 10] uniform points, greedy decoding with repeats forbidden, 1000 fresh point sets per "
        "length: Ptr-Net's exact-hull accuracy at n = 10 (the longest trained) >= 0.5; at n = 10 it exceeds the "
        "seq2seq + attention model's (same encoder, decoder, batches and decoding constraint; a fixed dictionary of 20 "
        "positions) with an exact McNemar p < 0.05 on the same sets; at n = 20 (twice the longest trained) Ptr-Net "
        "keeps >= 0.5 of its n = 10 accuracy, its outputs that are simple polygons cover >= 0.9 of the hull's area on "
        "average and <= 0.2 of its outputs are not simple polygons.",
        notes="Paper, Table 1 (convex hull; accuracy = exact hull, area = coverage of the true hull): LSTM + attention "
        "trained and tested at n = 50: 38.9 % / 99.7 %; Ptr-Net n = 50: 72.6 % / 99.9 %; Ptr-Net trained on 5-50 and "
        "tested at 50 / 100 / 500: 69.6 % / 99.9 %, 50.3 % / 99.9 %, 1.3 % / 99.2 % (beam search, 1M training "
        "examples, 512 LSTM units); at twice the longest trained length it keeps 50.3 / 69.6 = 0.72 of its accuracy. "
        "Ours: greedy decoding, 320k training examples, 128 units, n <= 10 (a CPU size). The seq2seq comparison is "
        "judged at n = 10, inside the training range, as in the paper's table; at n = 20 the seq2seq model's "
        "positions 11-20 were never targets, so its failure there is structural and only reported. Power: 1000 "
        "paired sets per length (a 5-point accuracy gap with ~15 % discordant pairs gives p < 0.01). Full run: "
        "~10 min on one thread (~110 ms per step of both models, measured on the 2-core machine under load 4; one thread, since two threads on these small LSTM steps ran 10x slower).",
        conditions=_ptr_rule,
        summarize=_ptr_summary,
        collect=collect.lab("pointer-hull"),
        cost_s=600,
        smoke_cost_s=10,
        tolerance=Tolerance("exact"),
        show=("ptr_acc@10", "s2s_acc@10", "ptr_acc@20", "ptr_area@20", "s2s_acc@20"),
    )
)


# ---------------------------------------------------------------- probing-sst2
#: the paper's headline (official code's README, ImageNet-1k top-1, frozen MAE ViT-B/16; the abstract's speed-up)
PROBE_PAPER = {
    "acc_ep": "75.5 % (EP, ImageNet-1k, frozen MAE ViT-B/16)",
    "acc_linear": "67.8 % (linear probing, same setting)",
    "cost": "up to 10x faster than multi-head attentive probing (abstract)",
}
PROBE_MHA_MARGIN = 0.01


def _probe_summary(raw: dict) -> dict:
    p = _m(raw)["probes"]
    out = {f"acc_{k}": _acc(v["accuracy"]) for k, v in p.items()}
    out["acc_ep"]["paper"] = PROBE_PAPER["acc_ep"]
    for k in ("linear_cls", "linear_mean"):
        out[f"acc_{k}"]["paper"] = PROBE_PAPER["acc_linear"]
    ep, mha = p["ep"], p["mha"]
    for k in ("linear_cls", "linear_mean", "mha"):
        vs = ep[f"vs_{k}"]
        out[f"ep_minus_{k}"] = number(
            vs["value"] - p[k]["accuracy"]["value"],
            n=vs["n"],
            mcnemar_p=vs["mcnemar_p"],
            only_ep=vs["only_this"],
            only_other=vs["only_base"],
        )
    out["params_ep_over_mha"] = number(ep["params"] / mha["params"], ep=ep["params"], mha=mha["params"])
    out["flops_ep_over_mha"] = number(ep["flops"] / mha["flops"], ep=ep["flops"], mha=mha["flops"], paper=PROBE_PAPER["cost"])
    out["step_time_ep_over_mha"] = number(ep["seconds_per_step"] / mha["seconds_per_step"])
    return out


def _probe_rule(x: dict) -> list:
    ep, mha = x["acc_ep"]["value"], x["acc_mha"]["value"]
    best = max(("linear_cls", "linear_mean"), key=lambda k: x[f"acc_{k}"]["value"])
    lp, d = x[f"acc_{best}"]["value"], x[f"ep_minus_{best}"]
    return [
        (
            f"EP accuracy {ep:.3f} > the better linear probe ({best}, {lp:.3f}), exact McNemar p = {d['mcnemar_p']:.2g} < "
            f"{ALPHA} ({d['only_ep']} vs {d['only_other']} discordant)",
            ep > lp and d["mcnemar_p"] < ALPHA,
        ),
        (f"EP accuracy {ep:.3f} >= multi-head attentive probe {mha:.3f} - {PROBE_MHA_MARGIN}", ep >= mha - PROBE_MHA_MARGIN),
    ]


register(
    Claim(
        name="probing-sst2",
        table=TABLE,
        short="Efficient probing beats linear probing and matches multi-head attentive probing (frozen MiniLM, SST-2)",
        claim="Efficient probing (multi-query cross-attention without key projection, one head, per-query value chunks) "
        "outperforms linear probing and prior attentive probing of frozen features, with fewer trainable parameters "
        "and less compute than multi-head attentive probing.",
        paper="Psomas et al., ICLR 2026, arXiv 2506.10178",
        command=("headlab lab probing-sst2 --steps 300 --folds 4 --seed 0 --threads 1 --out {out}",),
        smoke=("headlab lab probing-sst2 --smoke --out {out}",),
        size={
            "items": 0,
            "max_tokens": 64,
            "folds": 4,
            "steps": 300,
            "batch": 32,
            "lr": 1e-3,
            "queries": 32,
            "mha_heads": 12,
            "seed": 0,
        },
        smoke_size={"items": 48, "max_tokens": 24, "folds": 2, "steps": 3, "batch": 8},
        rule="frozen all-MiniLM-L6-v2 last-layer token states of the 872 SST-2 validation sentences, 4-fold cross-fitting "
        "(every sentence predicted once), each probe 300 AdamW steps of 32 at lr 1e-3 on the same batches: EP (32 "
        "queries) accuracy > the better of the two linear probes (on the CLS token, the paper's LP; on the mean of the "
        "tokens, the encoder's own sentence embedding) with an exact McNemar p < 0.05 against that probe; EP accuracy "
        ">= the multi-head (12-head) attentive probe's - 0.01. Parameters, forward FLOPs and seconds per step of EP "
        "over the MHA probe are reported, not judged (they follow from the architectures).",
        notes="Paper headline (official code's README, ImageNet-1k, frozen MAE ViT-B/16): linear probing 67.8 % -> EP "
        "75.5 % top-1; abstract: EP outperforms LP and prior attentive probes on seven benchmarks, up to 10x faster "
        "than multi-head attentive probing. Adapted: a frozen text encoder whose native embedding is the mean of its "
        "tokens, so the stronger of the CLS and mean linear probes is the baseline (the official benchmark's LP reads "
        "[CLS], or the average of the tokens where there is none; there, encoders trained with a global objective show "
        "LP ~ EP, e.g. CLIP ViT-B/16 77.9 vs 77.8, so a null here is plausible). The MHA condition tests "
        "non-inferiority within 1 point, weaker than the paper's 'outperforms'. Power: 872 paired sentences; with "
        "~10 % discordant pairs a 3-point gain gives p ~ 0.01. Full run: ~3 min on one thread (MiniLM states ~1 min, "
        "4 probes x 4 folds x 300 steps).",
        conditions=_probe_rule,
        summarize=_probe_summary,
        collect=collect.lab("probing-sst2"),
        cost_s=300,
        smoke_cost_s=30,
        tolerance=Tolerance("exact"),
        show=("acc_ep", "acc_linear_cls", "acc_linear_mean", "acc_mha", "params_ep_over_mha", "flops_ep_over_mha"),
    )
)


# ---------------------------------------------------------------- pooling-sst2 (AttSets, MLTP)
POOLING_SIZE = {
    "items": 0,
    "max_tokens": 64,
    "folds": 4,
    "steps": 300,
    "batch": 32,
    "lr": 1e-3,
    "latents": 16,
    "mltp_heads": 4,
    "mltp_d_head": 64,
    "seed": 0,
}
POOLING_SMOKE = {
    "items": 48,
    "max_tokens": 24,
    "folds": 2,
    "steps": 3,
    "batch": 8,
    "latents": 4,
    "mltp_heads": 2,
    "mltp_d_head": 16,
}
POOLING_CMD = ("headlab lab pooling-sst2 --steps 300 --folds 4 --seed 0 --threads 1 --out {out}",)
POOLING_BUDGET = (
    "frozen all-MiniLM-L6-v2 on the 872 SST-2 validation sentences, 4-fold cross-fitting, every pooling head + linear "
    "classifier trained 300 AdamW steps of 32 at lr 1e-3 on the same batches; "
)


MLTP_MARGIN = 0.03  # |MLTP - last-token accuracy| below which the two count as equivalent
ATTSETS_PAPER = "significantly outperforms max / mean pooling and GRUs (abstract; ShapeNet IoU tables not transcribed)"
MLTP_PAPER = "trainable pooling not significantly better than EOS-last pooling on classification (abstract; Wilcoxon over MTEB)"


def _pool_summary(raw: dict) -> dict:
    h = _m(raw)["heads"]
    out = {f"acc_{k}": _acc(v["accuracy"]) for k, v in h.items()}
    out["acc_attsets"]["paper"] = ATTSETS_PAPER
    out["attsets_vs_mean"] = _acc(h["attsets"]["accuracy"])
    out["attsets_vs_max"] = _acc(h["attsets"]["vs_max"])
    out["mltp_vs_last"] = _acc(h["mltp"]["vs_last"])
    d = h["mltp"]["diff_vs_last"]
    out["mltp_minus_last"] = number(d["value"], n=d["n"], ci=d["ci"], mcnemar_p=d["mcnemar_p"], level=0.9, paper=MLTP_PAPER)
    return out


def _attsets_rule(x: dict) -> list:
    a = x["acc_attsets"]["value"]
    best = max(("mean", "max"), key=lambda k: x[f"acc_{k}"]["value"])
    vs = x[f"attsets_vs_{best}"]
    return [
        (
            f"AttSets accuracy {a:.3f} > the better fixed pooling ({best}, {x[f'acc_{best}']['value']:.3f}), exact McNemar "
            f"p = {vs['mcnemar_p']:.2g} < {ALPHA} ({vs['only_this']} vs {vs['only_base']} discordant)",
            a > x[f"acc_{best}"]["value"] and vs["mcnemar_p"] < ALPHA,
        ),
    ]


def _mltp_rule(x: dict) -> list:
    d = x["mltp_minus_last"]
    lo, hi = d["ci"]
    return [
        (
            f"MLTP {x['acc_mltp']['value']:.3f} vs last-token pooling {x['acc_last']['value']:.3f}: difference {d['value']:+.3f}, "
            f"90 % paired interval [{lo:+.3f}, {hi:+.3f}] inside +-{MLTP_MARGIN} (equivalent at 5 %; McNemar p = "
            f"{d['mcnemar_p']:.2g})",
            _fin(lo) and _fin(hi) and lo > -MLTP_MARGIN and hi < MLTP_MARGIN,
        ),
    ]


register(
    Claim(
        name="pooling-sst2",
        table=TABLE,
        short="AttSets pooling beats mean / max pooling of a frozen encoder (adapted from multi-view 3D reconstruction)",
        claim="AttSets, a per-feature attention over the elements of a set, aggregates a feature set better than "
        "fixed pooling (mean, max) — here the set of a frozen sentence encoder's token states on SST-2.",
        paper="Yang, Wang, Markham, Trigoni, arXiv 1808.00758",
        command=POOLING_CMD,
        smoke=("headlab lab pooling-sst2 --smoke --out {out}",),
        size=POOLING_SIZE,
        smoke_size=POOLING_SMOKE,
        rule=POOLING_BUDGET + "AttSets accuracy > the better of mean and max pooling (the fixed poolings the paper "
        "compares with) with an exact McNemar p < 0.05 against that one on the same sentences.",
        notes="Paper (abstract): AttSets with FASet training 'significantly outperforms existing aggregation approaches' "
        "(max / mean pooling, GRU) on multi-view 3D reconstruction (ShapeNet); its tables report per-view-count IoU, "
        "not transcribed here. Adapted: a token set of a frozen text encoder, one training stage (no FASet). CLS and "
        "last-token pooling are reported beside. Power: 872 paired sentences (a 3-point gain with ~10 % discordant "
        "pairs gives p ~ 0.01). Full run (shared with pooling-sst2-mltp): ~4 min on one thread.",
        conditions=_attsets_rule,
        summarize=_pool_summary,
        collect=collect.lab("pooling-sst2"),
        cost_s=360,
        smoke_cost_s=30,
        tolerance=Tolerance("exact"),
        show=("acc_attsets", "acc_mean", "acc_max", "acc_cls", "attsets_vs_max"),
    )
)

register(
    Claim(
        name="pooling-sst2-mltp",
        table=TABLE,
        short="MLTP is equivalent to last-token pooling on classification (SST-2, frozen MiniLM)",
        claim="Trainable pooling does not significantly surpass simpler designs such as last-token (EOS) pooling on "
        "classification; Multi-Layers Trainable Pooling's advantage is on similarity and retrieval.",
        paper="Tang & Yang, 2024, arXiv 2409.02727",
        command=POOLING_CMD,
        smoke=("headlab lab pooling-sst2 --smoke --out {out}",),
        size=POOLING_SIZE,
        smoke_size=POOLING_SMOKE,
        rule=POOLING_BUDGET + "MLTP (16 latents, 4 x 64 attention, last-token state of each of the 6 layers) and "
        "last-token ([SEP]) pooling of the last layer are equivalent: the 90 % paired bootstrap interval of their "
        "accuracy difference lies inside +-0.03 (two one-sided tests at 5 %).",
        notes="Paper (abstract; Wilcoxon signed-rank tests over MTEB tasks, Mistral-7B with LoRA and a contrastive loss): "
        "bidirectional attention plus a trainable pooling layer wins on similarity and retrieval but does not "
        "significantly surpass EOS-last pooling on clustering and classification; MLTP is 'statistically superior' "
        "on similarity and retrieval. Adapted: a frozen 6-layer encoder, the pool trained by classification. An "
        "equivalence test, not 'p >= 0.05', so that an underpowered run cannot pass: with 872 paired sentences the "
        "90 % interval is about +-0.02 wide, so a true difference near 0 passes and one of 3 points or more fails "
        "(in either direction: a much worse MLTP is not 'as good as the simpler design'). Full run: the same run "
        "as pooling-sst2 (~4 min on one thread).",
        conditions=_mltp_rule,
        summarize=_pool_summary,
        collect=collect.lab("pooling-sst2"),
        cost_s=360,
        smoke_cost_s=30,
        tolerance=Tolerance("exact"),
        show=("acc_mltp", "acc_last", "acc_mean", "mltp_minus_last"),
    )
)


# ---------------------------------------------------------------- ponet-lra / ponet-speed
PONET_PAPER = "significantly outperforms Transformer on Long Range Arena (abstract; per-task numbers not transcribed)"
PONET_SPEED_PAPER = "faster than Transformer and only slightly slower than FNet at every length measured (GPU; abstract)"


def _ponet_summary(raw: dict) -> dict:
    m = _m(raw)
    out = {f"acc_{k}": number(**v["accuracy"]) for k, v in m["models"].items()}
    pv = m["ponet_vs_softmax"]
    out["ponet_minus_softmax"] = number(
        m["models"]["ponet"]["accuracy"]["value"] - m["models"]["softmax"]["accuracy"]["value"],
        n=m["test_items"],
        mcnemar_p=pv["mcnemar_p"],
        only_ponet=pv["only_ponet"],
        only_softmax=pv["only_softmax"],
    )
    out["majority_rate"] = number(m["majority_rate"], n=m["test_items"])
    out["acc_ponet"]["paper"] = PONET_PAPER
    return out


def _ponet_rule(x: dict) -> list:
    p, s, maj = x["acc_ponet"]["value"], x["acc_softmax"]["value"], x["majority_rate"]["value"]
    return [
        (f"PoNet test accuracy {p:.3f} >= softmax attention {s:.3f} - 0.02", p >= s - 0.02),
        (f"PoNet test accuracy {p:.3f} >= the majority-class rate {maj:.3f} + 0.05", p >= maj + 0.05),
    ]


register(
    Claim(
        name="ponet-lra",
        table=TABLE,
        short="PoNet's O(N) pooling mixer is as accurate as softmax attention on a ListOps-like task",
        claim="PoNet's multi-granularity pooling (global aggregation, segment and local max-pooling) mixes tokens in "
        "linear time and is at least competitive with Transformer attention on Long Range Arena's tasks.",
        paper="Tan et al., ICLR 2022, arXiv 2110.02442",
        command=("headlab lab ponet-lra --steps 2500 --length 256 --seed 0 --threads 1 --out {out}",),
        smoke=("headlab lab ponet-lra --smoke --out {out}",),
        size={
            "steps": 2500,
            "batch": 16,
            "lr": 1e-3,
            "length": 256,
            "depth": 3,
            "max_args": 10,
            "d_model": 64,
            "heads": 4,
            "layers": 2,
            "segment_size": 16,
            "test_items": 2000,
            "seed": 0,
        },
        smoke_size={"steps": 3, "batch": 4, "length": 64, "depth": 3, "max_args": 4, "test_items": 16},
        rule="ListOps-like expressions (MAX, MIN, MED, SM over digits, nesting <= 3, 2-10 arguments, 128-256 tokens, 10 "
        "classes), 2-layer width-64 encoders (PoNet mixer vs 4-head softmax attention, everything else equal), 2500 "
        "AdamW steps of 16 on the same batches, 2000 fresh test expressions: PoNet accuracy >= softmax accuracy - 0.02 "
        "and >= the majority-class rate + 0.05.",
        notes="Paper (abstract): on Long Range Arena PoNet 'significantly outperforms Transformer' with competitive "
        "accuracy while only slightly slower than FNet; 95.7 % of BERT's GLUE accuracy (+4.5 % relative over FNet). "
        "Its per-task LRA numbers are not transcribed here. Our rule is weaker than 'significantly outperforms': "
        "PoNet within 2 points of softmax attention (the paired McNemar test is reported), and both must have learnt "
        "something (5 points over the majority class, ~0.20 on the test set). The time per step of this run is "
        "recorded, not judged (the speed claim is ponet-speed). Only the synthetic task: a real long-range task "
        "(LRA's text or retrieval) is not shipped. Power: 2000 test expressions (Wilson half-width ~0.02). Full run: "
        "~10 min on one thread (~0.3 s per step of both models, measured on the 2-core machine under load 4).",
        conditions=_ponet_rule,
        summarize=_ponet_summary,
        collect=collect.lab("ponet-lra"),
        cost_s=600,
        smoke_cost_s=10,
        tolerance=Tolerance("exact"),
        show=("acc_ponet", "acc_softmax", "majority_rate", "ponet_minus_softmax"),
    )
)

PONET_SPEED_LENGTHS = [512, 1024, 2048, 4096]


def _ponet_speed_summary(raw: dict) -> dict:
    t = _m(raw)["timing"]
    out = {}
    for n, r in t.items():
        out[f"ratio@{n}"] = number(r["ratio"]["median"], n=len(r["pair_ratios"]), range=[r["ratio"]["min"], r["ratio"]["max"]])
    ns = sorted(int(n) for n in t)
    for k in ("ponet", "softmax"):
        ys = [t[str(n)]["seconds"][k]["median"] for n in ns]
        out[f"slope_{k}"] = number(float(np.polyfit(np.log(ns), np.log(ys), 1)[0]), n=len(ns))
    out[f"ratio@{ns[-1]}"]["paper"] = PONET_SPEED_PAPER
    return out


def _ponet_speed_rule(x: dict) -> list:
    longest = max(int(k.split("@")[1]) for k in x if k.startswith("ratio@"))
    r = x[f"ratio@{longest}"]
    sp, ss = x["slope_ponet"]["value"], x["slope_softmax"]["value"]
    return [
        (
            f"at {longest} tokens a PoNet training step takes {r['value']:.2f}x a softmax step (median of {r['n']} "
            f"alternating pairs, range {r['range'][0]:.2f}-{r['range'][1]:.2f}; <= 0.5)",
            r["value"] <= 0.5,
        ),
        (f"PoNet step time grows linearly: log-log slope against length {sp:.2f} <= 1.2 (softmax {ss:.2f})", sp <= 1.2),
    ]


register(
    Claim(
        name="ponet-speed",
        table=TABLE,
        short="PoNet's step time is linear in length and well below softmax attention's at 4K tokens (CPU)",
        claim="PoNet mixes tokens with linear complexity, so a training step costs time linear in the length and far "
        "less than quadratic softmax attention on long sequences.",
        paper="Tan et al., ICLR 2022, arXiv 2110.02442",
        command=(
            "headlab lab ponet-lra --steps 0 --name ponet-speed --timing-lengths 512 --timing-lengths 1024 "
            "--timing-lengths 2048 --timing-lengths 4096 --timing-batch 2 --timing-repeats 5 --threads 2 --out {out}",
        ),
        smoke=(
            "headlab lab ponet-lra --steps 0 --name ponet-speed --timing-lengths 64 --timing-lengths 128 "
            "--timing-batch 2 --timing-repeats 1 --threads 2 --out {out}",
        ),
        size={"steps": 0, "timing_lengths": PONET_SPEED_LENGTHS, "timing_batch": 2, "timing_repeats": 5, "name": "ponet-speed"},
        smoke_size={"steps": 0, "timing_lengths": [64, 128], "timing_batch": 2, "timing_repeats": 1, "name": "ponet-speed"},
        rule="one training step (forward, backward, AdamW) of the ponet-lra encoders (2 layers, width 64, 4 heads) on 2 "
        "random sequences, lengths 512, 1024, 2048, 4096, one warm-up then 5 alternating rounds, 2 threads: at 4096 "
        "tokens the median per-round ratio PoNet / softmax <= 0.5, and the log-log slope of PoNet's median step time "
        "against length <= 1.2.",
        notes="Paper (abstract): PoNet is faster than Transformer on LRA and only slightly slower than FNet across all "
        "lengths measured on GPUs (its speed table is not transcribed). A timing: run it alone on an otherwise idle "
        "machine (a busy run is judged invalid). Power: 5 alternating rounds per length, the median per-round ratio "
        "(range reported); a look under load 4 gave ~0.12 at 4096 tokens with one thread, so the 0.5 bound fails only "
        "if PoNet's step is far costlier than its O(N) form implies. Full run: ~2 min on 2 cores. The smoke size only "
        "checks that the command runs.",
        conditions=_ponet_speed_rule,
        summarize=_ponet_speed_summary,
        collect=collect.lab("ponet-speed"),
        cost_s=120,
        smoke_cost_s=10,
        tolerance=Tolerance("ratio", 0.25),
        show=("ratio@4096", "ratio@512", "slope_ponet", "slope_softmax"),
    )
)


# ---------------------------------------------------------------- dsf-equiv
def _dsf_summary(raw: dict) -> dict:
    from headlab.lab.dsf_equiv import DIFFER, EQUAL

    m, c = _m(raw), raw["config"]
    out = {f"equal_{k}": number(m[k]["max"], n=c["trials"]) for k in EQUAL}
    out.update({f"differ_{k}": number(m[k]["min"], n=c["trials"]) for k in DIFFER})
    rf = m["softmax_rf"]
    out["softmax_rf_slope"] = number(rf["slope"], n=len(rf["features"]))
    out["softmax_rf_error_largest"] = number(rf["error_at_largest"], n=c["trials"], features=rf["features"][-1])
    out["softmax_rf_error_smallest"] = number(rf["mean_error"][0], n=c["trials"], features=rf["features"][0])
    return out


EQUAL_TOL = 1e-5
DIFFER_GAP = 1e-2


def _dsf_rule(x: dict) -> list:
    conds = []
    for k, v in x.items():
        if k.startswith("equal_"):
            conds.append(
                (f"{k[6:]}: max relative error {v['value']:.2g} <= {EQUAL_TOL} (fp32 rounding)", v["value"] <= EQUAL_TOL)
            )
        elif k.startswith("differ_"):
            conds.append((f"{k[7:]}: min relative gap {v['value']:.2g} >= {DIFFER_GAP}", v["value"] >= DIFFER_GAP))
    s, lo, hi = x["softmax_rf_slope"]["value"], x["softmax_rf_error_largest"], x["softmax_rf_error_smallest"]
    conds += [
        (f"softmax from m random features: log-log slope of error vs m {s:.2f} in [-0.75, -0.2]", -0.75 <= s <= -0.2),
        (
            f"error at m = {lo['features']} ({lo['value']:.3g}) < at m = {hi['features']} ({hi['value']:.3g}) and >= 1e-4 "
            "(a finite state approximates softmax, never exactly)",
            lo["value"] < hi["value"] and lo["value"] >= 1e-4,
        ),
    ]
    return conds


register(
    Claim(
        name="dsf-equiv",
        table=TABLE,
        short="DSF: linear attention = SSM with Λ = 1; scalar-Λ SSM = gated linear attention; normalised and selective forms differ",
        claim="In the Dynamical Systems Framework, linear attention and selective SSMs are equivalent under stated "
        "conditions (state transition Λ = 1 or a scalar per head, shared input and output maps) and differ otherwise "
        "(normalisation, diagonal input-dependent Λ); softmax attention needs an infinite state and is approximated "
        "by finite feature maps whose error falls as the state grows.",
        paper="Sieber et al., NeurIPS 2024, arXiv 2405.15731",
        command=("headlab lab dsf-equiv --trials 5 --seed 0 --out {out}",),
        smoke=("headlab lab dsf-equiv --smoke --out {out}",),
        size={
            "trials": 5,
            "batch": 2,
            "heads": 2,
            "length": 64,
            "d_k": 16,
            "d_v": 16,
            "features": [16, 64, 256, 1024, 4096],
            "seed": 0,
        },
        smoke_size={"trials": 1, "length": 8, "d_k": 4, "d_v": 4, "features": [8, 64]},
        rule="5 random fp32 draws (batch 2, 2 heads, 64 steps, d_k = d_v = 16): the three forms DSF calls equal (linear "
        "attention vs the SSM with A = 0, Δ = 1; a scalar-Λ SSM vs gated linear attention; normalised linear attention "
        "vs the ratio of two SSMs) agree to a max relative error <= 1e-5; the two it calls different (selective SSM "
        "vs linear attention; normalised linear attention vs the SSM) differ by a relative gap >= 1e-2 in every draw; "
        "causal softmax attention approximated with m = 16..4096 positive random features: log-log slope of the "
        "relative error against m in [-0.75, -0.2], and the error at m = 4096 below the error at m = 16 and >= 1e-4.",
        notes="Paper (abstract): conditions under which linear attention and selective SSMs are equivalent and under "
        "which softmax attention can be approximated, with empirical checks; no headline number in the abstract. "
        "What this claim is: a numerical check of the framework's algebra on our implementations (the equal forms "
        "fail only if DSF's stated condition, or our recurrence / chunked / parallel form, is wrong; the differ checks "
        "guard against a check that compares a form with itself), plus one empirical law: a finite-state (random "
        "feature) approximation of softmax whose Monte Carlo error falls about as m^-1/2 (slope -0.5). It is not a "
        "test of DSF's trained-model experiments (MQAR, LRA, WikiText-103), which are not run here; the trained "
        "selective-SSM comparison is mechanisms-selective-copy. Full run: ~20 s.",
        conditions=_dsf_rule,
        summarize=_dsf_summary,
        collect=collect.lab("dsf-equiv"),
        cost_s=20,
        smoke_cost_s=3,
        tolerance=Tolerance("exact"),
        show=("equal_linear_is_ssm", "equal_gated_linear_is_scalar_ssm", "differ_selective_vs_linear", "softmax_rf_slope"),
    )
)


# ---------------------------------------------------------------- neighborhood-speed
NA_RATIO = 2.0
#: the abstract: fused kernels improve on naive ones by 1607 % (1D) and 581 % (2D) on average, as speed-ups
NA_PAPER = {1: 17.07, 2: 6.81}
NA_DIFF = 1e-4
NA_COMMAND = (
    "headlab bench neighborhood --lengths 4096,16384 --kernel 63 --grids 64,128 --kernel2d 13 --heads 4 --dim 32 "
    "--repeats 7 --threads 2 --halo 8,3 --out {out}",
)
NA_SMOKE = (
    "headlab bench neighborhood --lengths 1024 --kernel 15 --grids 32 --kernel2d 5 --heads 4 --dim 32 --repeats 2 "
    "--threads 2 --halo 4,1 --out {out}",
)
NA_SIZE = {"lengths": [4096, 16384], "kernel": 63, "grids": [64, 128], "kernel2d": 13, "repeats": 7, "threads": 2, "halo": [8, 3]}
NA_SMOKE_SIZE = {"lengths": [1024], "kernel": 15, "grids": [32], "kernel2d": 5, "repeats": 2, "threads": 2, "halo": [4, 1]}


def _na_summary(raw: dict) -> dict:
    out = {}
    for name, r in raw["lengths"].items():
        out[f"ratio@{name}"] = number(
            r["ratio"]["median"],
            n=len(r["pair_ratios"]),
            range=[r["ratio"]["min"], r["ratio"]["max"]],
            naive_s=r["seconds"]["naive"]["median"],
            fused_s=r["seconds"]["fused"]["median"],
            max_abs_diff=r["max_abs_diff"],
            paper=f"{NA_PAPER[r['dims']]}x (GPU, average over problem sizes; abstract)",
        )
    return out


def _na_rule(x: dict) -> list:
    conds = []
    for k, v in x.items():
        case = k.split("@", 1)[1]
        conds.append(
            (
                f"{case}: naive / fused time {v['value']:.2f}x (median of {v['n']} alternating pairs, range "
                f"{v['range'][0]:.2f}-{v['range'][1]:.2f}) >= {NA_RATIO}, same output (max |diff| {v['max_abs_diff']:.2g} "
                f"<= {NA_DIFF})",
                v["value"] >= NA_RATIO and v["max_abs_diff"] <= NA_DIFF,
            )
        )
    return conds or [("a case was timed", False)]


register(
    Claim(
        name="neighborhood-speed",
        table=TABLE,
        short="Fused (block-sparse) neighbourhood attention is several times faster than the naive unfused one (CPU)",
        claim="Fused neighbourhood attention kernels are much faster than naive (unfused: gather, materialised weights, "
        "softmax, gather) neighbourhood attention, in 1D and in 2D.",
        paper="Hassani et al., Faster Neighborhood Attention, NeurIPS 2024, arXiv 2403.04690 (NA: arXiv 2204.07143)",
        command=NA_COMMAND,
        smoke=NA_SMOKE,
        size=NA_SIZE,
        smoke_size=NA_SMOKE_SIZE,
        rule="fp32, non-causal, 4 heads, d = 32, 2 threads; 1D at 4096 and 16384 tokens with kernel 63, 2D on 64x64 and "
        "128x128 grids with 13x13 kernels; per case one warm-up of each, then 7 alternating rounds: the median per-round "
        "ratio naive / fused >= 2 in every case, with outputs equal to max |diff| <= 1e-4.",
        notes="Paper (abstract, GPU): fused kernels improve on naive kernels by an average of 1607 % (1D) and 581 % (2D), "
        "i.e. 17.1x and 6.8x; its GEMM-based unfused kernels by 895 % and 272 % in full precision. Ours: CPU fp32, "
        "the library's block-sparse gather kernel as the fused path (64-query blocks: in 2D on a row-major grid a "
        "block's neighbours span many key blocks, so the fused path computes several times the needed scores; a look "
        "under load 4 at 128x128 gave ~1.7x, so the 2D cases may well fail). Naive: torch gathers and einsums, not "
        "NATTEN's CUDA naive kernels. A timing: run it alone on an otherwise idle machine (a busy run is judged "
        "invalid); the smoke size only checks that the command runs. Power: 7 alternating rounds per case, the median "
        "per-round ratio with its range. Full run (shared with halo-speed): ~4 min on 2 cores.",
        conditions=_na_rule,
        summarize=_na_summary,
        collect=collect.paired("neighborhood"),
        cost_s=240,
        smoke_cost_s=20,
        tolerance=Tolerance("ratio", 0.25),
        show=("ratio@1d@4096", "ratio@1d@16384", "ratio@2d@64x64", "ratio@2d@128x128"),
    )
)


HALO_RATIO = 2.0
HALO_PAPER = "blocked local attention is faster and uses less memory than per-pixel windows (no number in the abstract)"


def _halo_summary(raw: dict) -> dict:
    out = {}
    for name, r in raw["lengths"].items():
        if "halo" not in r:
            continue
        h = r["halo"]
        out[f"halo_ratio@{name}"] = number(
            h["ratio"]["median"],
            n=len(h["pair_ratios"]),
            range=[h["ratio"]["min"], h["ratio"]["max"]],
            naive_s=r["seconds"]["naive"]["median"],
            halo_s=h["seconds"]["median"],
            naive_keys=r["keys_per_query"],
            halo_keys=h["keys_per_query"],
            paper=HALO_PAPER,
        )
    return out


def _halo_rule(x: dict) -> list:
    conds = [
        (
            f"{k.split('@', 1)[1]}: naive per-query windows ({v['naive_keys']} keys) / HaloNet blocked attention "
            f"({v['halo_keys']} keys per query) time {v['value']:.2f}x (median of {v['n']} alternating pairs, range "
            f"{v['range'][0]:.2f}-{v['range'][1]:.2f}) >= {HALO_RATIO}",
            v["value"] >= HALO_RATIO,
        )
        for k, v in x.items()
    ]
    return conds or [("a 2D case with HaloNet's blocked attention was timed", False)]


register(
    Claim(
        name="halo-speed",
        table=TABLE,
        short="HaloNet's blocked local attention is several times faster than per-query window attention (CPU, 2D)",
        claim="Blocked local self-attention with a halo (query tiles sharing one key window), HaloNet's 'more efficient "
        "implementation of self-attention', is much faster than local attention computed per query window at a "
        "comparable receptive field.",
        paper="Vaswani et al., Scaling Local Self-Attention for Parameter Efficient Visual Backbones, CVPR 2021, arXiv "
        "2103.12731",
        command=NA_COMMAND,
        smoke=NA_SMOKE,
        size=NA_SIZE,
        smoke_size=NA_SMOKE_SIZE,
        rule="the neighborhood-speed run (fp32, non-causal, 4 heads, d = 32, 2 threads, 7 alternating rounds): on the "
        "64x64 and 128x128 grids, the median per-round ratio of the naive per-query 13x13 neighbourhood attention's "
        "time over HaloNet's blocked attention (8x8 tiles, halo 3: 14x14 = 196 keys per query, more than the naive "
        "path's 169) >= 2 on both grids.",
        notes="Paper (abstract): two extensions to self-attention 'in conjunction with a more efficient implementation "
        "of self-attention, improve the speed, memory usage, and accuracy'; its headline is ImageNet accuracy in the "
        "parameter-limited setting, not measured here: only the "
        "efficiency of blocked attention is (partial). The two compute different attentions (tiles share keys; the "
        "trade of translational equivariance the paper makes), so only time is compared; halo_blocked is tested "
        "against the masked dense reference of the halo2d pattern. The bound was set after a look under load 4 "
        "(single calls: ~10x at 64x64, ~7x at 128x128). A timing: run it alone on an otherwise idle machine. Full run: "
        "the neighborhood-speed run (~4 min on 2 cores).",
        conditions=_halo_rule,
        summarize=_halo_summary,
        collect=collect.paired("neighborhood"),
        cost_s=240,
        smoke_cost_s=20,
        tolerance=Tolerance("ratio", 0.25),
        show=("halo_ratio@2d@64x64", "halo_ratio@2d@128x128"),
    )
)


# ---------------------------------------------------------------- refam-squad (an item-2 text adaptation)
REFAM_PAPER = "global attention sinks can be suppressed for sharper, more accurate grounding maps (abstract; no number)"
REFAM_CHANCE_X = 2.0


def _refam_summary(raw: dict) -> dict:
    m = _m(raw)
    vs = m["suppressed_vs_raw"]
    return {
        "hit_raw": number(**m["raw"]),
        "hit_suppressed": number(**m["suppressed"], paper=REFAM_PAPER),
        "suppressed_minus_raw": number(
            m["suppressed"]["value"] - m["raw"]["value"],
            n=m["items"],
            mcnemar_p=vs["mcnemar_p"],
            only_suppressed=vs["only_suppressed"],
            only_raw=vs["only_raw"],
        ),
        "chance": number(m["chance"], n=m["items"]),
        "items_with_passage_sinks": number(m["items_with_passage_sinks"], n=m["items"]),
    }


def _refam_rule(x: dict) -> list:
    r, s, ch, d = x["hit_raw"]["value"], x["hit_suppressed"]["value"], x["chance"]["value"], x["suppressed_minus_raw"]
    return [
        (
            f"GAS-suppressed map hit rate {s:.3f} > raw map {r:.3f}, exact McNemar p = {d['mcnemar_p']:.2g} < {ALPHA} "
            f"({d['only_suppressed']} vs {d['only_raw']} discordant)",
            s > r and d["mcnemar_p"] < ALPHA,
        ),
        (f"GAS-suppressed hit rate {s:.3f} >= {REFAM_CHANCE_X} x chance {ch:.3f}", s >= REFAM_CHANCE_X * ch),
    ]


register(
    Claim(
        name="refam-squad",
        table=TABLE,
        short="Suppressing global attention sinks sharpens question-to-passage grounding of the answer (SmolLM2, SQuAD; adapted)",
        claim="Global attention sinks that emerge in deeper layers draw surplus attention; suppressing them yields more "
        "accurate grounding maps — here, attention from a question to its passage finds the answer span more often.",
        paper="Kukleva et al., RefAM: Attention Magnets for Zero-Shot Referral Segmentation, arXiv 2509.22650",
        command=("headlab lab refam-squad --items 300 --first-layer 15 --seed 0 --threads 1 --out {out}",),
        smoke=("headlab lab refam-squad --smoke --out {out}",),
        size={"model": "smollm2-135m", "items": 300, "max_chars": 1000, "first_layer": 15, "seed": 0},
        smoke_size={"items": 4, "max_chars": 700},
        rule="SmolLM2-135M-Instruct, eager attention, the first 300 answerable SQuAD questions with passages of <= 1000 "
        "characters (plain prompt), layers 15-29: the grounding map (question-token-to-passage attention, mean over "
        "heads and question tokens, normalised over the passage per layer, mean over layers) hits when its top passage "
        "token overlaps a gold answer occurrence; global sinks per layer by GlobalSinkProbe's rule (A >= 0.1 for >= 50 % "
        "of (head, query) pairs), zeroed in their layer before normalisation. The suppressed map's hit rate > the raw "
        "map's with an exact McNemar p < 0.05 on the same items, and >= 2 x the chance rate (the answer tokens' share "
        "of the passage).",
        notes="Paper (abstract): stop words act as attention magnets; global attention sinks emerge in deeper layers and "
        "'can be safely suppressed or redirected onto auxiliary tokens, leading to sharper and more accurate grounding "
        "maps'; state of the art on zero-shot referring image and video segmentation (no number in the abstract). "
        "Adapted (issue item 2): text, not diffusion cross-attention; the answer span plays the referred object; only "
        "GAS suppression, not the stop-word redistribution. The rule can fail when the sinks lie outside the passage "
        "(the first tokens) or are seldom the map's top token: then there are few discordant items. Power: 300 paired "
        "items; a 4-point gain with ~6 % discordant items gives p ~ 0.01. Full run: ~4 min on one thread (one eager "
        "forward of ~300 tokens per item).",
        conditions=_refam_rule,
        summarize=_refam_summary,
        collect=collect.lab("refam-squad"),
        cost_s=240,
        smoke_cost_s=30,
        tolerance=Tolerance("exact"),
        show=("hit_suppressed", "hit_raw", "chance", "items_with_passage_sinks"),
    )
)


# ---------------------------------------------------------------- the paper table (docs/papers.md)
PAPERS_FILE = "docs/papers.json"
STATUSES = ("reproduced", "not reproduced", "adapted", "partial", "not yet", "out of scope")


def load_papers(repo: Path | None = None) -> list[dict]:
    """The committed paper list (title, arXiv id, status, reason, claims, headline) of ``docs/papers.json``."""
    from .record import repo_root

    root = repo or repo_root() or Path.cwd()
    data = json.loads((root / PAPERS_FILE).read_text(encoding="utf-8"))
    papers = data["papers"]
    for p in papers:
        if p["status"] not in STATUSES:
            raise ValueError(f"{p['title']!r}: status {p['status']!r}; valid: {', '.join(STATUSES)}")
    return papers


def _claim_cell(name: str, root: Path) -> tuple[str, str]:
    """('`name`: outcome (evidence)', our headline numbers) for one claim."""
    from .evidence import label
    from .render import _cost, _load, num, outcome_word

    claims = all_claims()
    if name not in claims:
        return f"`{name}`: not registered", ""
    c = claims[name]
    res = _load(root, name)
    if res is None:
        return f"`{name}`: not run yet (~{_cost(c.cost_s)})", ""
    shown = "; ".join(
        f"{k.replace('_', ' ')}: {num(x)}" + (f" (paper: {x['paper']})" if x.get("paper") else "")
        for k in c.show
        if isinstance(x := res["measured"].get(k), dict)
    )
    return f"`{name}`: **{outcome_word(res)}** (*{label(res)['evidence']}*)", shown


def papers_table(root: Path) -> str:
    """One row per seed paper: status with its reason, the claims measuring it (computed outcome, evidence label),
    the paper's headline beside ours, and the command that regenerates ours."""
    from .render import _table

    rows = []
    for p in load_papers():
        cells = [_claim_cell(n, root) for n in p.get("claims", [])]
        claims = "<br>".join(c for c, _ in cells) or "–"
        ours = "<br>".join(s for _, s in cells if s) or "–"
        cmds = "<br>".join(f"`headlab reproduce {n}`" for n in p.get("claims", [])) or "–"
        arxiv = f"[{p['arxiv']}](https://arxiv.org/abs/{p['arxiv']})" if p.get("arxiv") else "–"
        rows.append(
            [
                p["title"],
                arxiv,
                f"**{p['status']}**: {p['reason']}",
                claims,
                p.get("headline") or "–",
                ours,
                cmds,
            ]
        )
    counts = {s: sum(1 for p in load_papers() if p["status"] == s) for s in STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return f"{len(rows)} papers: {summary}.\n\n" + _table(
        ["paper", "arXiv", "status", "claims: outcome (evidence)", "paper's headline", "ours", "regenerate"], rows
    )


def _hook() -> None:
    from .render import RENDERERS

    RENDERERS["papers"] = papers_table


_hook()
