"""Experiment ``exit-squad``: DyVTE's dynamic token exit, adapted to a text LM (Wu et al., "Accelerating Multimodal
Large Language Models via Dynamic Visual-Token Exit and the Empirical Findings", NeurIPS 2025, arXiv 2411.19628).

DyVTE finds that once the text tokens have read enough of the image, the visual tokens stop contributing, and drops
all of them after a layer that a light hyper-network picks per input from the text tokens' state.  An adaptation: the
"visual" tokens are the paragraph of a SQuAD question (:mod:`headlab.lab.exit_items`), and exiting after layer l
masks the paragraph's keys in every later layer (the :func:`headlab.edits.span_exit` edit: other tokens stop reading
it).  Per item:

1. a plain forward over the prompt gives the full greedy answer (<= ``max_new`` tokens, stop at a newline or EOS) and
   the hidden state of the prompt's last position after every layer (the "text token status");
2. for every candidate layer l in ``exit_layers`` the answer is decoded greedily again with the paragraph exited
   after l; ``same_l`` says whether it equals the full answer, ``correct_l`` whether it is right (a SQuAD-normalised
   gold answer in its first line, as ``carve-squad``);
3. ``saved_l`` is the share of prefill FLOPs an implementation that drops the paragraph's tokens after layer l saves
   (:func:`prefill_flops`: the projections and MLP of the dropped tokens and the attention pairs that involve them,
   in layers > l; the LM head and embeddings left out).  The edit only masks, so this is counted, not timed.

The hyper-network is a logistic regression on the last-position state after layer l (standardised per layer on the
training items) plus a one-hot of l, trained to predict ``same_l``; ``folds``-fold cross-fitting (folds from
``random.Random(f"{seed}/exit-squad/folds")``) gives every item an exit chosen by a model that never saw it: the
earliest candidate layer with predicted probability >= ``threshold``, else no exit.  Compared: the full model, the
learned exit, the oracle exit (the earliest layer whose answer is the full one) and the fixed exit layer whose mean
saving is nearest the learned exit's.  The decision rule is registered in the claims harness
(``repro/headlab_repro/exit_claims.py``, ``exit-squad``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

from .carve_squad import _correct, decode, greedy, new_cache
from .config import ExitSquadConfig
from .dominance_squad import span_tokens
from .exit_items import ExitItem, make_items, render
from .result import LabResult, each_item, lab_result, print_table

NAME = ExitSquadConfig.NAME


def check_settings(cfg: ExitSquadConfig, n_layers: int | None = None) -> None:
    """ValueError naming the first bad setting and its valid range."""
    for name in ("items", "max_new", "folds"):
        if getattr(cfg, name) < (2 if name == "folds" else 1):
            raise ValueError(f"{name} must be >= {2 if name == 'folds' else 1}, got {getattr(cfg, name)}")
    if cfg.folds > cfg.items:
        raise ValueError(f"folds must be <= items ({cfg.items}), got {cfg.folds}")
    if not 0.0 < cfg.threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {cfg.threshold}")
    if not cfg.l2 > 0:
        raise ValueError(f"l2 must be > 0, got {cfg.l2}")
    layers = list(cfg.exit_layers)
    if not layers or layers != sorted(set(layers)) or layers[0] < 0:
        raise ValueError(f"exit_layers must be increasing layer indices >= 0, got {layers}")
    if n_layers is not None and layers[-1] >= n_layers - 1:
        raise ValueError(f"exit_layers must be < {n_layers - 1} (exiting after the last layer changes nothing), got {layers}")


# ------------------------------------------------------------------------------------------ FLOPs
def layer_costs(config) -> tuple[float, float]:
    """(FLOPs per token per layer in the projections and MLP, FLOPs per (query, key) pair per layer in attention) of a
    Llama-style decoder ``config`` (multiply-adds count 2)."""
    d, H = config.hidden_size, config.num_attention_heads
    Hkv = getattr(config, "num_key_value_heads", None) or H
    dh = getattr(config, "head_dim", None) or d // H
    f = config.intermediate_size
    linear = 2 * (d * H * dh + 2 * d * Hkv * dh + H * dh * d + 3 * d * f)
    return float(linear), float(4 * H * dh)


def prefill_flops(n: int, dropped: int, exit_after: int | None, n_layers: int, costs: tuple[float, float]) -> float:
    """Prefill FLOPs of ``n`` tokens when ``dropped`` of them leave after layer ``exit_after`` (None: never), causal
    attention: every layer costs tokens x linear + causal pairs x pair cost, with the kept tokens only after the exit."""
    if not 0 <= dropped <= n:
        raise ValueError(f"dropped must be in [0, n={n}], got {dropped}")
    lin, pair = costs
    full = lambda m: m * lin + m * (m + 1) / 2 * pair  # noqa: E731
    if exit_after is None:
        return n_layers * full(n)
    if not 0 <= exit_after < n_layers:
        raise ValueError(f"exit_after must be in [0, {n_layers - 1}], got {exit_after}")
    return (exit_after + 1) * full(n) + (n_layers - 1 - exit_after) * full(n - dropped)


# ------------------------------------------------------------------------------------------ the model
@torch.no_grad()
def exit_item(model, tok, item: ExitItem, cfg: ExitSquadConfig) -> tuple[dict, torch.Tensor]:
    """(record, features (len(exit_layers), d): the last prompt position's hidden state after each candidate layer)."""
    from headlab.edits import span_exit
    from headlab.engine.hf import attach

    prompt = render(item, tok)
    enc = tok(prompt.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offs = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    ctx = span_tokens(offs, *prompt.context)
    if not ctx:
        raise ValueError(f"item {item.index}: the paragraph has no tokens")
    dev = next(model.parameters()).device
    n_layers = model.config.num_hidden_layers
    cache = new_cache(model)
    # the full answer on the same (eager) attention path as the exits: an exit after the last layer is the identity
    with attach(model, edits=[span_exit(group=ctx, after_layer=n_layers - 1)]):
        x = torch.tensor([ids], device=dev)
        out = model(input_ids=x, cache=cache, use_cache=True, output_hidden_states=True, logits_to_keep=1)
        feats = torch.stack([out.hidden_states[l + 1][0, -1].float().cpu() for l in cfg.exit_layers])
        full = decode(model, tok, cache, out, len(ids), cfg.max_new)
    costs = layer_costs(model.config)
    base = prefill_flops(len(ids), len(ctx), None, n_layers, costs)
    rec: dict = {"item": item.index, "question_id": item.question_id, "answers": list(item.answers)}
    rec.update({"tokens": len(ids), "context_tokens": len(ctx), "answer_full": full})
    rec["correct_full"], rec["exact_full"] = _correct(full, item.answers)
    for l in cfg.exit_layers:
        with attach(model, edits=[span_exit(group=ctx, after_layer=l)]):
            ans = greedy(model, tok, ids, cfg.max_new)
        rec[f"answer_{l}"] = ans
        rec[f"same_{l}"] = int(ans.strip() == full.strip())
        rec[f"correct_{l}"] = _correct(ans, item.answers)[0]
        rec[f"saved_{l}"] = 1.0 - prefill_flops(len(ids), len(ctx), l, n_layers, costs) / base
    return rec, feats


# ------------------------------------------------------------------------------------------ the hyper-network
def fit_logistic(X: torch.Tensor, y: torch.Tensor, l2: float, iters: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """(w (F,), b ()) minimising mean binary cross-entropy of sigmoid(X w + b) against ``y`` (N,) in {0, 1} plus
    ``l2`` / 2 * |w|^2 (L-BFGS, float64, deterministic)."""
    X, y = X.double(), y.double()
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-14
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, y) + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _design(feats: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(items, layers, d) states -> (items * layers, d + layers) rows: the state standardised per layer (``mean`` and
    ``std`` (layers, d)), a one-hot of the layer."""
    n, k, _ = feats.shape
    z = ((feats.double() - mean[None]) / std[None]).reshape(n * k, -1)
    return torch.cat([z, torch.eye(k, dtype=torch.float64).repeat(n, 1)], 1)


def cross_fit(feats: torch.Tensor, same: torch.Tensor, folds: int, l2: float, seed: int) -> torch.Tensor:
    """(items, layers) held-out probabilities that exiting after each candidate layer keeps the full answer:
    ``folds``-fold cross-fitting over items, each layer's states standardised on the training folds."""
    n = feats.shape[0]
    order = list(range(n))
    random.Random(f"{seed}/exit-squad/folds").shuffle(order)
    fold = torch.empty(n, dtype=torch.long)
    for pos, i in enumerate(order):
        fold[i] = pos % folds
    prob = torch.empty(same.shape, dtype=torch.float64)
    for f in range(folds):
        tr, te = fold != f, fold == f
        ftr = feats[tr].double()  # (n_train, layers, d): each layer standardised over the training items
        mean, std = ftr.mean(0), ftr.std(0, correction=0).clamp_min(1e-6)
        w, b = fit_logistic(_design(feats[tr], mean, std), same[tr].reshape(-1), l2)
        prob[te] = torch.sigmoid(_design(feats[te], mean, std) @ w + b).reshape(int(te.sum()), -1)
    return prob


def choose_exit(prob: torch.Tensor, threshold: float) -> list[int | None]:
    """Per item, the index of the earliest candidate layer with probability >= ``threshold`` (None: no exit)."""
    out: list[int | None] = []
    for row in prob.tolist():
        out.append(next((j for j, p in enumerate(row) if p >= threshold), None))
    return out


def _auc(score: np.ndarray, label: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None when one class is missing."""
    pos, neg = score[label == 1], score[label == 0]
    if not len(pos) or not len(neg):
        return None
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (len(pos) * len(neg)))


def summarize(records: list[dict], prob: torch.Tensor, cfg: ExitSquadConfig) -> dict:
    """The measured numbers: accuracy and saving of the full, learned, oracle and matched fixed exits."""
    from headlab.stats import mcnemar_exact, proportion

    layers = list(cfg.exit_layers)
    n = len(records)
    col = lambda k: np.array([r[k] for r in records], dtype=float)  # noqa: E731
    correct = np.stack([col(f"correct_{l}") for l in layers], 1)  # (n, k)
    same = np.stack([col(f"same_{l}") for l in layers], 1)
    saved = np.stack([col(f"saved_{l}") for l in layers], 1)
    full = col("correct_full")
    choice = choose_exit(prob, cfg.threshold)
    oracle = [next((j for j in range(len(layers)) if same[i, j]), None) for i in range(n)]

    def policy(ch: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
        acc = np.array([full[i] if j is None else correct[i, j] for i, j in enumerate(ch)])
        sav = np.array([0.0 if j is None else saved[i, j] for i, j in enumerate(ch)])
        return acc, sav

    learned_acc, learned_sav = policy(choice)
    oracle_acc, oracle_sav = policy(oracle)
    mean_saved = saved.mean(0)
    fixed = int(np.argmin(np.abs(mean_saved - learned_sav.mean()) - 1e-9 * np.arange(len(layers))))  # ties: later
    fixed_acc, fixed_sav = correct[:, fixed], saved[:, fixed]

    def vs(a: np.ndarray, b: np.ndarray) -> dict:
        mc = mcnemar_exact(a == 1, b == 1)
        return {"difference": float((a - b).mean()), "only_a": mc.only_a, "only_b": mc.only_b, "mcnemar_p": mc.pvalue}

    return {
        "items": n,
        "exit_layers": layers,
        "threshold": cfg.threshold,
        "tokens_mean": float(col("tokens").mean()),
        "context_share_mean": float((col("context_tokens") / col("tokens")).mean()),
        "accuracy": {
            "full": proportion(int(full.sum()), n),
            "learned": proportion(int(learned_acc.sum()), n),
            "oracle": proportion(int(oracle_acc.sum()), n),
            "fixed": proportion(int(fixed_acc.sum()), n),
        },
        "saved": {"learned": float(learned_sav.mean()), "oracle": float(oracle_sav.mean()), "fixed": float(fixed_sav.mean())},
        "fixed_layer": layers[fixed],
        "learned_vs_full": vs(learned_acc, full),
        "learned_vs_fixed": vs(learned_acc, fixed_acc),
        "exit_counts": {
            str(layers[j]) if j is not None else "none": int(sum(c == j for c in choice)) for j in [*range(len(layers)), None]
        },
        "by_layer": {
            str(l): {
                "same": float(same[:, j].mean()),
                "accuracy": float(correct[:, j].mean()),
                "saved": float(mean_saved[j]),
                "held_out_auc": _auc(prob[:, j].numpy(), same[:, j]),
            }
            for j, l in enumerate(layers)
        },
        "held_out_auc": _auc(prob.numpy().reshape(-1), same.reshape(-1)),
        "choices": [None if j is None else layers[j] for j in choice],
    }


def run(config: ExitSquadConfig | None = None, *, quiet: bool = False, **overrides) -> LabResult:
    """Full vs learned vs oracle vs fixed paragraph exit on SQuAD.  Settings: :class:`ExitSquadConfig`."""
    from headlab.models import load

    cfg = ExitSquadConfig.make(config, **overrides)
    check_settings(cfg)
    model, tok = load(cfg.model)
    check_settings(cfg, model.config.num_hidden_layers)
    items = make_items(cfg.items, seed=cfg.seed, max_chars=cfg.max_chars)
    done = each_item(NAME, items, lambda it: exit_item(model, tok, it, cfg), quiet)
    records, feats = [r for r, _ in done], [f for _, f in done]
    same = torch.tensor([[r[f"same_{l}"] for l in cfg.exit_layers] for r in records], dtype=torch.float64)
    prob = cross_fit(torch.stack(feats), same, cfg.folds, cfg.l2, cfg.seed)
    measured = summarize(records, prob, cfg)
    for r, c, p in zip(records, measured["choices"], prob.tolist(), strict=True):
        r["learned_exit"], r["prob"] = c, [round(x, 6) for x in p]
    res = lab_result(NAME, measured, cfg.record(), records)
    if not quiet:
        acc, sav = measured["accuracy"], measured["saved"]
        rows = [["full", acc["full"]["value"], 0.0]]
        rows += [[k, acc[k]["value"], sav[k]] for k in ("learned", "oracle", "fixed")]
        print_table(
            f"paragraph exit on SQuAD ({measured['items']} items; fixed = layer {measured['fixed_layer']})",
            ["exit", "accuracy (contains)", "prefill FLOPs saved"],
            rows,
            res,
        )
    return res


def plot(res: LabResult, fig) -> None:
    m = res.measured
    a1, a2 = fig.subplots(1, 2)
    layers = m["exit_layers"]
    a1.plot(layers, [m["by_layer"][str(l)]["same"] for l in layers], "o-", label="answer unchanged")
    a1.plot(layers, [m["by_layer"][str(l)]["accuracy"] for l in layers], "s-", label="accuracy")
    a1.axhline(m["accuracy"]["full"]["value"], ls=":", color="k", label="full accuracy")
    a1.set(xlabel="paragraph exits after layer", ylabel="share of items", ylim=(0, 1), title="fixed exit layer")
    a1.legend(fontsize=8)
    for k, mk in (("learned", "o"), ("oracle", "^"), ("fixed", "s")):
        a2.plot(m["saved"][k], m["accuracy"][k]["value"], mk, ms=8, label=k)
    a2.plot(0.0, m["accuracy"]["full"]["value"], "k*", ms=10, label="full")
    a2.plot(
        [m["by_layer"][str(l)]["saved"] for l in layers], [m["by_layer"][str(l)]["accuracy"] for l in layers], ":", color="0.6"
    )
    a2.set(xlabel="prefill FLOPs saved (counted)", ylabel="accuracy", title="accuracy vs saving")
    a2.legend(fontsize=8)
