"""Experiment ``carve-squad``: CARVE's contrastive attention refinement, adapted to text (Ge et al., "Focusing by
Contrastive Attention: Enhancing VLMs' Visual Reasoning", arXiv 2509.06461).  An adaptation: CARVE contrasts a VLM's
attention over image pixels under a task question with that under a general instruction, keeps the top pixels and
masks the rest of the image before asking again; here the model is a text LM (SmolLM2-135M-Instruct), the image is a
context of SQuAD paragraphs (the gold one hidden among distractors, :mod:`headlab.lab.carve_items`), the pixels are
context tokens, the regions are whole sentences, and masking drops the other sentences from the prompt.

Per item, two forwards over the same context (attention read by headlab's engine), one ending in the task question Q and one in the general
instruction G ("Summarize the text."), both ending in the answer prefix.  For the last prompt position (the step
that emits the first answer token) and each layer l, a_l(X) is its head-mean attention over the context tokens
(the tokens of the sentences), renormalised to sum 1 over them (N tokens).  In the layer window W (``first_layer``
.. ``last_layer``):

    contrast_i = mean_{l in W} a_l,i(Q) / (a_l,i(G) + λ),   λ = ``lam`` / N   (CARVE's Â; ``lam`` 1: the uniform weight)
    plain_i    = mean_{l in W} a_l,i(Q)                                        (the ablation: no contrast)

A sentence scores the sum over its tokens.  Sentences are kept highest score first (ties: the earlier one) until
the kept tokens reach ``keep`` x N (whole sentences, so the share can overshoot), and the model answers greedily
(<= ``max_new`` tokens, stop at a newline or EOS) from four contexts of the same item: (a) full, (b) CARVE-kept,
(c) kept by the plain score, (d) a random sentence subset kept by the same rule in a seeded random order
(``random.Random(f"{seed}/carve-squad/random/{item}")``).  An answer is correct when a SQuAD-normalised gold answer
occurs in its first line (``contains``, :func:`headlab.data.tasks.base.score_generation`); exact match is recorded
beside it.  A kept context *hits* when it holds a gold sentence (a sentence of the gold paragraph that contains a
gold answer); the chance rate is the hit probability of the random rule, ``chance_draws`` seeded draws per item.

Also measured: the entropy −Σ a ln a of a_l(Q) and a_l(G) over the context per layer (CARVE: entropy falls with
depth), its Spearman correlation with the layer, and the window entropy of items the full context answers right vs
wrong.  CARVE also fuses several generated steps (weights t − t_start + 1) and takes connected regions; this version
reads only the first answer step and uses sentences as regions.  The decision rule is registered in the claims
harness (``repro/headlab_repro/carve_claims.py``, ``carve-squad``).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence

import numpy as np
import torch

from headlab.stats import mcnemar_exact, proportion

from .carve_items import GENERAL, CarveItem, make_items, render, token_sentences
from .config import CarveSquadConfig
from .result import LabResult, each_item, lab_result, print_table

NAME = CarveSquadConfig.NAME
METHODS = ("carve", "plain", "random")
CONTEXTS = ("full", *METHODS)


def check_settings(cfg: CarveSquadConfig, n_layers: int | None = None) -> None:
    """ValueError naming the first bad setting and its valid range."""
    if not 0.0 < cfg.keep < 1.0:
        raise ValueError(f"keep must be in (0, 1) (the share of context tokens kept), got {cfg.keep}")
    if not cfg.lam > 0:
        raise ValueError(f"lam must be > 0 (λ in units of the mean context attention 1/N), got {cfg.lam}")
    for name in ("items", "max_new", "chance_draws"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if not 0 <= cfg.first_layer <= cfg.last_layer:
        raise ValueError(f"need 0 <= first_layer <= last_layer, got first_layer={cfg.first_layer}, last_layer={cfg.last_layer}")
    if n_layers is not None and cfg.last_layer >= n_layers:
        raise ValueError(f"last_layer={cfg.last_layer} out of range: the model's layers are 0..{n_layers - 1}")


# ------------------------------------------------------------------------------------------ scores and selection
def contrast_scores(
    a_q: torch.Tensor, a_g: torch.Tensor, sent: torch.Tensor, n_sent: int, layers: Sequence[int], lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(carve (S,), plain (S,)) sentence scores: a_q, a_g (L, N) attention renormalised over the N context tokens,
    ``sent`` (N,) the sentence of each token; per token contrast mean_l a_q / (a_g + lam / N) and plain mean_l a_q
    over ``layers``, summed per sentence (a sentence with no token scores 0)."""
    if a_q.shape != a_g.shape or a_q.dim() != 2 or sent.shape != (a_q.shape[1],):
        raise ValueError(f"need a_q, a_g (L, N) and sent (N,), got {tuple(a_q.shape)}, {tuple(a_g.shape)}, {tuple(sent.shape)}")
    if not lam > 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    w = list(layers)
    lam_v = lam / a_q.shape[1]
    c = (a_q[w] / (a_g[w] + lam_v)).mean(0)
    p = a_q[w].mean(0)
    zero = torch.zeros(n_sent, dtype=c.dtype)
    return zero.index_add(0, sent, c), zero.index_add(0, sent, p)


def keep_in_order(order: Sequence[int], sizes: Sequence[int], share: float) -> list[int]:
    """Sentences taken in ``order`` until their tokens (``sizes``) reach ``share`` of all; sorted ids."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    target, n, kept = share * sum(sizes), 0, []
    for i in order:
        if n >= target:
            break
        kept.append(int(i))
        n += sizes[i]
    return sorted(kept)


def keep_top(scores: Sequence[float], sizes: Sequence[int], share: float) -> list[int]:
    """Highest score first (ties: the earlier sentence) until ``share`` of the tokens is kept (:func:`keep_in_order`)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return keep_in_order(order, sizes, share)


def keep_random(sizes: Sequence[int], share: float, rng: random.Random) -> list[int]:
    """The same rule in a random order drawn from ``rng``."""
    order = list(range(len(sizes)))
    rng.shuffle(order)
    return keep_in_order(order, sizes, share)


def chance_hit(sizes: Sequence[int], share: float, gold: Sequence[int], draws: int, rng: random.Random) -> float:
    """Share of ``draws`` random subsets (:func:`keep_random`) holding a sentence in ``gold``."""
    g = set(gold)
    return sum(bool(g & set(keep_random(sizes, share, rng))) for _ in range(draws)) / draws


# ------------------------------------------------------------------------------------------ the model
def _stop_ids(model, tok) -> set[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = getattr(model.config, "eos_token_id", None) if ids is None else ids
    out = {int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids]) if i is not None}
    if getattr(tok, "eos_token_id", None) is not None:
        out.add(int(tok.eos_token_id))
    return out


@torch.no_grad()
def _forward(model, ids: Sequence[int], cache, start: int):
    """Feed ``ids[start:]`` at positions start.. after ``cache`` (which holds ``ids[:start]``); the output."""
    dev = next(model.parameters()).device
    x = torch.tensor([list(ids[start:])], dtype=torch.long, device=dev)
    pos = torch.arange(start, len(ids), device=dev)[None]
    return model(input_ids=x, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)


@torch.no_grad()
def read_last_row(model, ids: Sequence[int], cache, start: int = 0):
    """(rows (L, H, T), output): the prompt ``ids`` after ``cache`` (holding ``ids[:start]``) with the attention of its
    last position read by :class:`headlab.measure.contrast.LastRowProbe`.  Only the last token runs under
    ``attach``, as a single query over the cached keys, so no (T, T) attention matrix is ever formed."""
    from headlab.engine.hf import attach
    from headlab.measure.contrast import LastRowProbe

    if not 0 <= start < len(ids):
        raise ValueError(f"start must be in [0, {len(ids) - 1}], got {start}")
    if start < len(ids) - 1:
        _forward(model, ids[:-1], cache, start)
    probe = LastRowProbe()
    with attach(model, probes=[probe]):
        out = _forward(model, ids, cache, len(ids) - 1)
    return probe.result(), out


@torch.no_grad()
def decode(model, tok, cache, out, T: int, max_new: int) -> str:
    """Greedy continuation after a prompt of ``T`` tokens whose forward gave ``out`` and filled ``cache``: at most
    ``max_new`` tokens, stopping at EOS or at a newline after some text."""
    dev = next(model.parameters()).device
    stop, new = _stop_ids(model, tok), []
    nxt = int(out.logits[0, -1].argmax())
    for step in range(max_new):
        if nxt in stop:
            break
        new.append(nxt)
        if "\n" in tok.decode(new, skip_special_tokens=True).lstrip() or step == max_new - 1:
            break
        out = model(
            input_ids=torch.tensor([[nxt]], device=dev),
            position_ids=torch.tensor([[T + step]], device=dev),
            cache=cache,
            use_cache=True,
        )
        nxt = int(out.logits[0, -1].argmax())
    return tok.decode(new, skip_special_tokens=True)


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


@torch.no_grad()
def greedy(model, tok, ids: Sequence[int], max_new: int) -> str:
    """Greedy answer after ``ids`` (:func:`decode`)."""
    cache = new_cache(model)
    return decode(model, tok, cache, _forward(model, ids, cache, 0), len(ids), max_new)


def context_attention(rows: torch.Tensor, pos: Sequence[int]) -> torch.Tensor:
    """(L, N) from last-row attention (L, H, T): head mean at the context positions ``pos``, renormalised per layer."""
    a = rows.double().mean(1)[:, list(pos)]
    mass = a.sum(-1, keepdim=True)
    if bool((mass <= 0).any()):
        raise ValueError("the last token gives the context no attention in some layer; cannot renormalise")
    return a / mass


def _encode(tok, r):
    enc = tok(r.text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _correct(text: str, answers: Sequence[str]) -> tuple[int, int]:
    from headlab.data.tasks.base import Item, normalize, score_generation

    line = normalize(text.strip().split("\n")[0])
    return int(score_generation(text, Item("", answers=list(answers)), "contains")), int(
        any(normalize(a) == line for a in answers if normalize(a))
    )


def carve_item(model, tok, item: CarveItem, cfg: CarveSquadConfig) -> dict:
    """One item's record: the kept sentences, hits and answers of the four contexts, the entropy per layer."""
    from headlab.measure.contrast import subset_entropy

    rendered = {"task": render(item, item.task(), tok), "general": render(item, GENERAL, tok)}
    enc = {k: _encode(tok, r) for k, r in rendered.items()}
    (q_ids, q_offs), (g_ids, g_offs) = enc["task"], enc["general"]
    common = 0  # the shared prefix (the context) is prefilled once
    while common < min(len(q_ids), len(g_ids)) - 1 and q_ids[common] == g_ids[common]:
        common += 1
    cache = new_cache(model)
    if common:
        _forward(model, q_ids[:common], cache, 0)
    shared = copy.deepcopy(cache)
    rows_q, out = read_last_row(model, q_ids, cache, common)
    answers = {"full": decode(model, tok, cache, out, len(q_ids), cfg.max_new)}
    rows_g, _ = read_last_row(model, g_ids, shared, common)
    pos_q, sent_q = token_sentences(q_offs, rendered["task"].spans)
    pos_g, sent_g = token_sentences(g_offs, rendered["general"].spans)
    if (pos_q, sent_q) != (pos_g, sent_g) or max(pos_q) >= common:
        raise ValueError(f"item {item.index}: the task and general prompts tokenise the context differently")
    a_q, a_g = context_attention(rows_q, pos_q), context_attention(rows_g, pos_g)
    n_sent = len(item.sentences)
    sizes = [0] * n_sent
    for s in sent_q:
        sizes[s] += 1
    layers = list(range(cfg.first_layer, cfg.last_layer + 1))
    carve, plain = contrast_scores(a_q, a_g, torch.tensor(sent_q), n_sent, layers, cfg.lam)
    kept = {
        "carve": keep_top(carve.tolist(), sizes, cfg.keep),
        "plain": keep_top(plain.tolist(), sizes, cfg.keep),
        "random": keep_random(sizes, cfg.keep, random.Random(f"{cfg.seed}/carve-squad/random/{item.index}")),
    }
    by_subset: dict[tuple[int, ...], str] = {}
    for m in METHODS:
        key = tuple(kept[m])
        if key not in by_subset:
            ids, _ = _encode(tok, render(item, item.task(), tok, kept[m]))
            by_subset[key] = greedy(model, tok, ids, cfg.max_new)
        answers[m] = by_subset[key]
    ent_q, ent_g = subset_entropy(a_q), subset_entropy(a_g)
    gold, n_tok = set(item.gold), len(sent_q)
    rec = {
        "item": item.index,
        "question_id": item.question_id,
        "question": item.question,
        "answers": list(item.answers),
        "documents": len(item.squad_docs),
        "gold_document": item.gold_doc,
        "sentences": n_sent,
        "context_tokens": n_tok,
        "gold_sentences": sorted(gold),
        "chance_hit": chance_hit(
            sizes, cfg.keep, item.gold, cfg.chance_draws, random.Random(f"{cfg.seed}/carve-squad/chance/{item.index}")
        ),
        "entropy_task": [round(float(x), 6) for x in ent_q],
        "entropy_general": [round(float(x), 6) for x in ent_g],
        "entropy_window_task": float(ent_q[layers].mean()),
    }
    for m in METHODS:
        rec[f"kept_{m}"] = kept[m]
        rec[f"share_{m}"] = sum(sizes[i] for i in kept[m]) / n_tok
        rec[f"hit_{m}"] = int(bool(gold & set(kept[m])))
    for c in CONTEXTS:
        rec[f"answer_{c}"] = answers[c]
        rec[f"correct_{c}"], rec[f"exact_{c}"] = _correct(answers[c], item.answers)
    return rec


# ------------------------------------------------------------------------------------------ the experiment
def _paired(a: list[int], b: list[int]) -> dict:
    mc = mcnemar_exact(a, b)
    return {"difference": (sum(a) - sum(b)) / len(a), "only_a": mc.only_a, "only_b": mc.only_b, "mcnemar_p": mc.pvalue}


def summarize(records: list[dict], cfg: CarveSquadConfig) -> dict:
    """The measured numbers of a list of :func:`carve_item` records."""
    from scipy import stats

    col = lambda k: [r[k] for r in records]  # noqa: E731
    n = len(records)
    ent_q = np.array(col("entropy_task"))  # (items, layers)
    ent_g = np.array(col("entropy_general"))
    depth = ent_q.mean(0)
    rho = stats.spearmanr(np.arange(len(depth)), depth) if len(depth) > 2 else None
    win = np.array(col("entropy_window_task"))
    right = np.array(col("correct_full"), dtype=bool)
    return {
        "items": n,
        "context_tokens_mean": float(np.mean(col("context_tokens"))),
        "sentences_mean": float(np.mean(col("sentences"))),
        "documents_mean": float(np.mean(col("documents"))),
        "accuracy": {c: proportion(sum(col(f"correct_{c}")), n) for c in CONTEXTS},
        "exact": {c: proportion(sum(col(f"exact_{c}")), n) for c in CONTEXTS},
        "carve_vs_random": _paired(col("correct_carve"), col("correct_random")),
        "carve_vs_full": _paired(col("correct_carve"), col("correct_full")),
        "carve_vs_plain": _paired(col("correct_carve"), col("correct_plain")),
        "plain_vs_random": _paired(col("correct_plain"), col("correct_random")),
        "hit": {m: proportion(sum(col(f"hit_{m}")), n) for m in METHODS},
        "hit_carve_vs_plain": _paired(col("hit_carve"), col("hit_plain")),
        "hit_carve_vs_random": _paired(col("hit_carve"), col("hit_random")),
        "chance_hit": float(np.mean(col("chance_hit"))),
        "kept_share": {m: float(np.mean(col(f"share_{m}"))) for m in METHODS},
        "entropy_task_by_layer": [round(float(x), 6) for x in depth],
        "entropy_general_by_layer": [round(float(x), 6) for x in ent_g.mean(0)],
        "entropy_depth_spearman": None if rho is None else float(rho.statistic),
        "entropy_depth_p": None if rho is None else float(rho.pvalue),
        "entropy_window_full_correct": float(win[right].mean()) if right.any() else None,
        "entropy_window_full_wrong": float(win[~right].mean()) if (~right).any() else None,
        "layers": [cfg.first_layer, cfg.last_layer],
        "keep": cfg.keep,
        "lam": cfg.lam,
        "general": GENERAL,
    }


def run(config: CarveSquadConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Full vs CARVE-kept vs plain-attention-kept vs random-kept context on SQuAD among distractors.
    Settings: :class:`CarveSquadConfig`."""
    from headlab.models import load

    cfg = CarveSquadConfig.make(config, **overrides)
    check_settings(cfg)
    model, tok = load(cfg.model)
    check_settings(cfg, model.config.num_hidden_layers)
    items = make_items(tok, cfg.items, seed=cfg.seed, context_tokens=cfg.context_tokens)
    records = each_item(NAME, items, lambda it: carve_item(model, tok, it, cfg), quiet)
    measured = summarize(records, cfg)
    res = lab_result(NAME, measured, cfg.record(), records)
    if not quiet:
        acc, hit = measured["accuracy"], measured["hit"]
        rows = [[c, acc[c]["value"], hit[c]["value"] if c in hit else "–"] for c in CONTEXTS]
        rows.append(["chance (random rule)", "–", measured["chance_hit"]])
        p = measured["carve_vs_random"]["mcnemar_p"]
        print_table(
            f"CARVE on SQuAD among distractors ({measured['items']} items, keep {cfg.keep:g}), CARVE vs random McNemar p = {p:.2g}",
            ["context", "accuracy (contains)", "gold-sentence hit rate"],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    m = res.measured
    a1, a2, a3 = fig.subplots(1, 3)
    for ax, block, names, title in (
        (a1, m["accuracy"], CONTEXTS, "answer accuracy (contains)"),
        (a2, m["hit"], METHODS, "kept context holds a gold sentence"),
    ):
        vals = [block[k]["value"] for k in names]
        err = [[v - block[k]["ci"][0] for v, k in zip(vals, names)], [block[k]["ci"][1] - v for v, k in zip(vals, names)]]
        ax.bar(list(names), vals, yerr=err, color=[f"C{i}" for i in range(len(names))])
        ax.set(ylabel="rate (95% Wilson)", title=title, ylim=(0, 1))
    a2.axhline(m["chance_hit"], ls=":", color="k", label="chance")
    a2.legend()
    a3.plot(m["entropy_task_by_layer"], "o-", ms=3, label="task question")
    a3.plot(m["entropy_general_by_layer"], "s-", ms=3, label="general instruction")
    lo, hi = m["layers"]
    a3.axvspan(lo - 0.5, hi + 0.5, color="0.9", label="contrast window")
    a3.set(xlabel="layer", ylabel="entropy over the context (nats)", title="last-token attention entropy")
    a3.legend(fontsize=8)
