"""Experiment ``dominance-squad``: text dominance and its fix by token compression, adapted to a text LM (Wu et al.,
"When Language Overrules: Revealing Text Dominance in Multimodal Large Language Models", arXiv 2508.10552).

The paper measures how much attention a multimodal LM's answer tokens give the text tokens against the tokens of the
other modality, per token: the Modality Dominance Index

    MDI = (A_T / |T|) / (A_O / |O|)        (A_X: attention mass on the tokens of X, renormalised so A_T + A_O = 1)

is > 1 when text dominates (LLaVA-1.5-7B: 10.23) and compressing the redundant non-text tokens brings it toward 1
(0.86 after [CLS]-based compression).  An adaptation: here both spans are text.  T is the task span (the instruction
and the question), O the long, redundant span (a context of SQuAD paragraphs, the gold one hidden among distractors,
:mod:`headlab.lab.carve_items`); prompt-template and heading tokens (the system prompt, its first-token sink, the
``Document k:`` lines, the answer prefix) belong to neither.  The attention is that of the query positions that emit
the answer: the prompt's last position and every generated token fed back (greedy, at most ``max_new`` tokens,
stopping at a newline or EOS), head-mean, summed over the layers of a group: early (the first two layers), middle (the
two central ones) and late (the last two).  Also recorded: the attention-efficiency index of O,
AEI_O = (A_O / (A_T + A_O)) / (|O| / (|T| + |O|)) (1: O gets its token share).

Compression keeps whole sentences of O, highest score first, until ``keep`` of its tokens (the
:func:`headlab.lab.carve_squad.keep_top` rule); the score of a sentence is the attention its tokens receive from the
full prompt's last position, head- and layer-mean (the model's own attention ranks its context, as the [CLS]
attention ranks image tokens in the paper).  A random sentence subset kept by the same rule
(``random.Random(f"{seed}/dominance-squad/random/{item}")``) separates what the ranking does from what fewer tokens
do.  Each of the three contexts (full, compressed, random) is answered and scored like ``carve-squad``.  The decision
rule is registered in the claims harness (``repro/headlab_repro/dominance_claims.py``, ``dominance-squad``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

from .carve_items import CarveItem, make_items, render, token_sentences
from .carve_squad import _correct, _encode, _forward, _stop_ids, keep_random, keep_top, new_cache
from .config import DominanceSquadConfig
from .result import LabResult, each_item, lab_result, print_table

NAME = DominanceSquadConfig.NAME
CONTEXTS = ("full", "compressed", "random")
GROUPS = ("early", "middle", "late")


def layer_groups(n_layers: int) -> dict[str, list[int]]:
    """The layer groups of the paper: the first two layers, the two central ones and the last two."""
    if n_layers < 2:
        raise ValueError(f"need >= 2 layers for the early / middle / late groups, got {n_layers}")
    mid = n_layers // 2
    return {"early": [0, 1], "middle": [mid - 1, mid], "late": [n_layers - 2, n_layers - 1]}


def check_settings(cfg: DominanceSquadConfig) -> None:
    """ValueError naming the first bad setting and its valid range."""
    if not 0.0 < cfg.keep < 1.0:
        raise ValueError(f"keep must be in (0, 1) (the share of context tokens kept), got {cfg.keep}")
    for name in ("items", "max_new"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")


def span_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Positions of the non-empty tokens whose characters overlap [start, end)."""
    return [t for t, (a, b) in enumerate(offsets) if b > a and a < end and b > start]


def dominance(a: torch.Tensor, text: Sequence[int], other: Sequence[int], layers: Sequence[int]) -> dict[str, float]:
    """MDI and AEI of the text span over the other span from attention ``a`` (L, T) (head- and row-mean), summed
    over ``layers``: {"mdi", "aei_other", "share_other"} (share_other = A_O / (A_T + A_O))."""
    if not text or not other:
        raise ValueError(f"both spans need tokens, got |T| = {len(text)}, |O| = {len(other)}")
    sub = a[list(layers)].double()
    a_t, a_o = float(sub[:, list(text)].sum()), float(sub[:, list(other)].sum())
    if a_t <= 0 or a_o <= 0:
        raise ValueError(f"a span gets no attention (A_T = {a_t}, A_O = {a_o}); the index is undefined")
    n_t, n_o = len(text), len(other)
    share = a_o / (a_t + a_o)
    return {"mdi": (a_t / n_t) / (a_o / n_o), "aei_other": share / (n_o / (n_t + n_o)), "share_other": share}


@torch.no_grad()
def answer_rows(model, tok, ids: Sequence[int], max_new: int) -> tuple[list[int], list[torch.Tensor]]:
    """(greedy answer ids, one (L, T) head-mean attention row over the ``T = len(ids)`` prompt tokens per query
    position that emits an answer token or the stop: the prompt's last position, then each generated token fed
    back).  Each runs as one query over the cache under a :class:`headlab.measure.contrast.LastRowProbe`, so no
    (T, T) matrix is ever formed; generation stops at EOS, at a newline after some text or after ``max_new``."""
    from headlab.engine.hf import attach
    from headlab.measure.contrast import LastRowProbe

    dev = next(model.parameters()).device
    T = len(ids)
    cache = new_cache(model)
    if T > 1:
        _forward(model, ids[:-1], cache, 0)
    stop, new, rows = _stop_ids(model, tok), [], []

    def step(token: int, pos: int) -> int:
        probe = LastRowProbe()
        with attach(model, probes=[probe]):
            out = model(
                input_ids=torch.tensor([[token]], device=dev),
                position_ids=torch.tensor([[pos]], device=dev),
                cache=cache,
                use_cache=True,
            )
        rows.append(probe.result()[:, :, :T].mean(1))  # (L, T)
        return int(out.logits[0, -1].argmax())

    nxt = step(ids[-1], T - 1)
    for k in range(max_new):
        if nxt in stop:
            break
        new.append(nxt)
        if "\n" in tok.decode(new, skip_special_tokens=True).lstrip() or k == max_new - 1:
            break
        nxt = step(nxt, T + k)
    return new, rows


def answer_attention(model, tok, ids: Sequence[int], max_new: int) -> tuple[str, torch.Tensor]:
    """(greedy answer, attention (L, T) over the prompt: the mean of the :func:`answer_rows`)."""
    new, rows = answer_rows(model, tok, ids, max_new)
    return tok.decode(new, skip_special_tokens=True), torch.stack(rows).mean(0)


def _context(model, tok, item: CarveItem, keep: Sequence[int] | None, groups: dict[str, list[int]], max_new: int):
    """Answer, correctness and the per-group indices of one rendering of ``item`` (``keep``: sentences, None: all)."""
    query = item.task()
    rendered = render(item, query, tok, keep)
    ids, offs = _encode(tok, rendered)
    at = rendered.text.rindex(query)
    text = span_tokens(offs, at, at + len(query))
    other, sent = token_sentences(offs, rendered.spans)
    new, rows = answer_rows(model, tok, ids, max_new)
    answer, a = tok.decode(new, skip_special_tokens=True), torch.stack(rows).mean(0)
    out = {"answer": answer, "tokens_text": len(text), "tokens_other": len(other)}
    out["correct"], out["exact"] = _correct(answer, item.answers)
    for g, layers in groups.items():
        for k, v in dominance(a, text, other, layers).items():
            out[f"{k}_{g}"] = v
    return out, rows[0], other, sent  # rows[0]: the prompt's last position (it emits the first answer token)


def dominance_item(model, tok, item: CarveItem, cfg: DominanceSquadConfig) -> dict:
    """One item's record: the three contexts' answers, correctness, MDI / AEI per layer group, the kept sentences."""
    groups = layer_groups(model.config.num_hidden_layers)
    full, last_row, other, sent = _context(model, tok, item, None, groups, cfg.max_new)
    n_sent = len(item.sentences)
    sizes, score = [0] * n_sent, [0.0] * n_sent
    per_token = last_row.double().mean(0)[other]  # (|O|,) layer-mean attention of the full prompt's last position
    for s, v in zip(sent, per_token.tolist(), strict=True):
        sizes[s] += 1
        score[s] += v
    kept = {
        "compressed": keep_top(score, sizes, cfg.keep),
        "random": keep_random(sizes, cfg.keep, random.Random(f"{cfg.seed}/dominance-squad/random/{item.index}")),
    }
    rec = {"item": item.index, "question_id": item.question_id, "answers": list(item.answers), "sentences": n_sent}
    ctx = {"full": full}
    for m in ("compressed", "random"):
        ctx[m] = _context(model, tok, item, kept[m], groups, cfg.max_new)[0]
        rec[f"kept_{m}"] = kept[m]
        rec[f"share_{m}"] = sum(sizes[i] for i in kept[m]) / sum(sizes)
        rec[f"hit_{m}"] = int(bool(set(item.gold) & set(kept[m])))
    for c, block in ctx.items():
        rec.update({f"{k}_{c}": v for k, v in block.items()})
    return rec


def _geo(x: np.ndarray, seed: int) -> dict:
    """Geometric mean of positive ``x`` with a percentile bootstrap 95 % interval (of the mean of ln x)."""
    from headlab.stats import bootstrap_mean

    m, lo, hi = bootstrap_mean(np.log(x), seed=seed)
    return {"value": float(np.exp(m)), "ci": [float(np.exp(lo)), float(np.exp(hi))], "n": int(x.size)}


def summarize(records: list[dict], cfg: DominanceSquadConfig) -> dict:
    """The measured numbers of a list of :func:`dominance_item` records."""
    from scipy import stats

    from headlab.stats import mcnemar_exact, paired_difference, proportion

    col = lambda k: np.array([r[k] for r in records], dtype=float)  # noqa: E731
    n = len(records)
    out: dict = {"items": n, "keep": cfg.keep, "groups": list(GROUPS)}
    out["accuracy"] = {c: proportion(int(col(f"correct_{c}").sum()), n) for c in CONTEXTS}
    out["exact"] = {c: proportion(int(col(f"exact_{c}").sum()), n) for c in CONTEXTS}
    for c in ("compressed", "random"):
        a, b = col(f"correct_{c}").astype(int), col("correct_full").astype(int)
        mc = mcnemar_exact(a == 1, b == 1)
        out[f"{c}_vs_full"] = {
            "difference": float((a - b).mean()),
            "only_a": mc.only_a,
            "only_b": mc.only_b,
            "mcnemar_p": mc.pvalue,
        }
        out[f"hit_{c}"] = proportion(int(col(f"hit_{c}").sum()), n)
        out[f"kept_share_{c}"] = float(col(f"share_{c}").mean())
    out["tokens"] = {
        c: {"text": float(col(f"tokens_text_{c}").mean()), "other": float(col(f"tokens_other_{c}").mean())} for c in CONTEXTS
    }
    for g in GROUPS:
        block = {c: _geo(col(f"mdi_{g}_{c}"), cfg.seed) for c in CONTEXTS}
        block["aei_other"] = {c: float(col(f"aei_other_{g}_{c}").mean()) for c in CONTEXTS}
        for c in ("compressed", "random"):
            far_c, far_f = np.abs(np.log(col(f"mdi_{g}_{c}"))), np.abs(np.log(col(f"mdi_{g}_full")))
            d = far_c - far_f  # < 0: closer to balance (MDI 1) than the full context
            p = float(stats.wilcoxon(far_c, far_f)[1]) if np.any(d != 0) else None
            out_d = paired_difference(far_c, far_f, seed=cfg.seed)
            out_d.update({"wilcoxon_p": p, "closer": int((d < 0).sum())})
            block[f"distance_{c}_minus_full"] = out_d
        out[f"mdi_{g}"] = block
    return out


def run(config: DominanceSquadConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """MDI and accuracy of full vs attention-compressed vs randomly compressed SQuAD contexts.
    Settings: :class:`DominanceSquadConfig`."""
    from headlab.models import load

    cfg = DominanceSquadConfig.make(config, **overrides)
    check_settings(cfg)
    model, tok = load(cfg.model)
    layer_groups(model.config.num_hidden_layers)
    items = make_items(tok, cfg.items, seed=cfg.seed, context_tokens=cfg.context_tokens)
    records = each_item(NAME, items, lambda it: dominance_item(model, tok, it, cfg), quiet)
    measured = summarize(records, cfg)
    res = lab_result(NAME, measured, cfg.record(), records)
    if not quiet:
        acc = measured["accuracy"]
        rows = [[c, acc[c]["value"], *(measured[f"mdi_{g}"][c]["value"] for g in GROUPS)] for c in CONTEXTS]
        print_table(
            f"text dominance on SQuAD among distractors ({measured['items']} items, keep {cfg.keep:g})",
            ["context", "accuracy (contains)", *(f"MDI {g}" for g in GROUPS)],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    m = res.measured
    a1, a2 = fig.subplots(1, 2)
    x = np.arange(len(GROUPS))
    for i, c in enumerate(CONTEXTS):
        vals = [m[f"mdi_{g}"][c]["value"] for g in GROUPS]
        err = [
            [v - m[f"mdi_{g}"][c]["ci"][0] for v, g in zip(vals, GROUPS)],
            [m[f"mdi_{g}"][c]["ci"][1] - v for v, g in zip(vals, GROUPS)],
        ]
        a1.bar(x + (i - 1) * 0.27, vals, 0.27, yerr=err, label=c, color=f"C{i}")
    a1.axhline(1.0, ls=":", color="k", label="balance (MDI 1)")
    a1.set(
        xticks=x,
        xticklabels=list(GROUPS),
        yscale="log",
        ylabel="MDI, task span over context (geometric mean)",
        title="text dominance",
    )
    a1.legend(fontsize=8)
    vals = [m["accuracy"][c]["value"] for c in CONTEXTS]
    err = [
        [v - m["accuracy"][c]["ci"][0] for v, c in zip(vals, CONTEXTS)],
        [m["accuracy"][c]["ci"][1] - v for v, c in zip(vals, CONTEXTS)],
    ]
    a2.bar(list(CONTEXTS), vals, yerr=err, color=[f"C{i}" for i in range(len(CONTEXTS))])
    a2.set(ylabel="accuracy (95% Wilson)", ylim=(0, 1), title=f"answers (keep {m['keep']:g} of the context)")
