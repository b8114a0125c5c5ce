"""The long-context suite on a real model (``headlab sparsify eval --suite long``): RULER-style tasks (Hsieh et al.,
arXiv 2404.06654; ``headlab.data.longctx``) answered greedily by dense attention and by sparse patterns or
per-head plans, scored per task as RULER scores them, with Wilson intervals and paired exact McNemar tests
(``headlab.stats``), the power those sizes give (``power``), and a check that the planners' calibration data
share no passage with the suite.

Generation follows NVIDIA's kvpress pipeline (github.com/NVIDIA/kvpress): the context is prefilled, the question
is fed after it (or is part of the context, ``question="inside"``: RULER's plain prompt), then greedy decoding
stops at EOS or the task's token budget. A plan decodes with its compressed KV cache (``headlab.kv_cache``,
``prefill="sparse"`` through the plan's pattern or ``"dense"``: full attention, then each head keeps its planned
keys, a press's contract); the question tokens then go one per step, as the cache takes them. Every trial is a
line of the resumable trial log (``TrialLog``).

    items = make_suite(tok, 4096, n=20)
    res = evaluate_suite(model, tok, [("duo", plan), ("uniform", uni)], items, log=TrialLog("trials.jsonl"))
    write_suite_report(res, "out/")     # results.json, table.md, plot.png
"""

from __future__ import annotations

import contextlib
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...data.longctx import Encoded, SuiteItem, encode, item_key, passage_hash, score
from ...patterns.base import Pattern
from ...stats import mcnemar_exact, paired_difference, wilson_interval
from ...timing import order
from . import plan_id
from .decode import cache_nbytes, dense_kv_bytes, full_cache
from .log import TrialLog
from .power import detectable_difference

QUESTIONS = ("after", "inside")
NAN = float("nan")


# ---------------------------------------------------------------------------------------------- generation
def eos_ids(model) -> set[int]:
    """The model's end-of-sequence token ids (generation config, else config)."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = getattr(model.config, "eos_token_id", None)
    if ids is None:
        return set()
    return {int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])}


def _pattern_map(config, n_layers: int, dense_layers: Sequence[int]):
    """What ``attach`` takes for a config: None (dense), the plan itself, or a pattern on every non-dense layer."""
    if config is None or plan_id.is_plan(config):
        return config
    if not isinstance(config, Pattern):
        raise ValueError(f"a config must be None, a per-head plan or a Pattern, got {type(config).__name__}")
    return {layer: config for layer in range(n_layers) if layer not in set(dense_layers)}


@torch.no_grad()
def generate(
    model,
    context_ids: Sequence[int],
    question_ids: Sequence[int],
    max_new: int,
    config=None,
    *,
    prefill: str = "sparse",
    dense_layers: Sequence[int] = (0,),
    eos: set[int] | None = None,
) -> dict:
    """Greedy answer of one item (kvpress's protocol, see the module doc) under ``config`` (None = dense, a
    per-head plan or a Pattern). Returns {"tokens", "prefill_s" (the context), "decode_s" (question + answer),
    "n_new", "cache", "cache_note", "cache_bytes" (after the context's prefill), "dense_bytes", "kv_fraction"}.
    ``prefill`` ("sparse" | "dense") matters for patterns and plans: "dense" prefills with full attention and
    keeps only what the plan keeps (patterns and plans the compressed cache refuses: a full cache, masked at
    every decode step)."""
    from ...engine.hf import attach, model_shape
    from ..kvcache import PREFILLS, kv_cache

    if prefill not in PREFILLS:
        raise ValueError(f"prefill must be one of {PREFILLS}, got {prefill!r}")
    if max_new < 1:
        raise ValueError(f"max_new must be >= 1, got {max_new}")
    if not context_ids or not question_ids:
        raise ValueError(f"context_ids and question_ids must be non-empty, got {len(context_ids)} and {len(question_ids)}")
    eos = eos_ids(model) if eos is None else eos
    dev = next(model.parameters()).device
    pattern = _pattern_map(config, model_shape(model)[0], dense_layers)
    kind, note = "full", ""
    cache = full_cache(model)
    if plan_id.is_plan(config):
        try:
            cache, kind = kv_cache(model, config, prefill=prefill), "compressed"
        except (ValueError, NotImplementedError, TypeError) as e:
            note = f"kv_cache refused the plan: {e}"
    attached = (lambda: attach(model, pattern=pattern)) if pattern is not None else contextlib.nullcontext
    prefill_ctx = attached if (kind == "compressed" or prefill == "sparse") else contextlib.nullcontext
    T = len(context_ids)
    x = torch.tensor([list(context_ids)], dtype=torch.long, device=dev)
    t0 = time.perf_counter()
    with prefill_ctx():
        model(input_ids=x, position_ids=torch.arange(T, device=dev)[None], cache=cache, use_cache=True, logits_to_keep=1)
    prefill_s = time.perf_counter() - t0
    nbytes = cache_nbytes(cache)
    q = list(question_ids)
    t0 = time.perf_counter()
    with attached():
        if kind == "compressed":  # the compressed cache takes one token per step after its prompt
            for j, tok in enumerate(q):
                out = model(
                    input_ids=torch.tensor([[tok]], device=dev),
                    position_ids=torch.tensor([[T + j]], device=dev),
                    cache=cache,
                    use_cache=True,
                )
        else:
            out = model(
                input_ids=torch.tensor([q], device=dev),
                position_ids=torch.arange(T, T + len(q), device=dev)[None],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        nxt = out.logits[0, -1].argmax()
        tokens = [int(nxt)]
        pos = T + len(q)
        while len(tokens) < max_new and tokens[-1] not in eos:
            out = model(input_ids=nxt.view(1, 1), position_ids=torch.tensor([[pos]], device=dev), cache=cache, use_cache=True)
            nxt = out.logits[0, -1].argmax()
            tokens.append(int(nxt))
            pos += 1
    decode_s = time.perf_counter() - t0
    dense = dense_kv_bytes(model, T)
    return {
        "tokens": tokens,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "n_new": len(tokens),
        "cache": kind,
        "cache_note": note,
        "cache_bytes": nbytes,
        "dense_bytes": dense,
        "kv_fraction": nbytes / dense if dense else NAN,
        "context_tokens": T,
        "question_tokens": len(q),
    }


# ---------------------------------------------------------------------------------------------- the run
def setting(config, dense_layers: Sequence[int] = (0,)) -> str:
    """What a trial depends on besides the item: 'dense', 'plan NAME|METHOD|BUDGET|HASH' or the pattern and its
    dense layers."""
    if config is None:
        return "dense"
    if plan_id.is_plan(config):
        return "plan " + plan_id.identity(config)
    return f"{config.describe()} dense_layers={sorted(set(dense_layers))}"


@dataclass
class SuiteRow:
    """One configuration on the suite: per-task and pooled accuracy (0/1: every reference found), RULER's mean
    score, Wilson 95 % intervals, exact McNemar vs dense and vs a baseline on the same items, KV bytes and times."""

    label: str
    kind: str  # "dense" | "plan" | "pattern"
    pattern: str
    length: int
    question: str
    prefill: str
    tasks: dict = field(default_factory=dict)  # task -> {n, correct, accuracy, ci, ruler, vs_dense, p_vs_dense}
    items: int = 0
    correct: int = 0
    accuracy: float = NAN  # pooled = the mean of per-task accuracies (equal items per task)
    acc_ci: list = field(default_factory=lambda: [NAN, NAN])
    average: float = NAN  # mean over tasks of the per-task accuracy
    ruler: float = NAN  # mean over tasks of RULER's mean score (0-100)
    vs_dense: list = field(default_factory=lambda: [0, 0])
    p_vs_dense: float = NAN
    diff_vs_dense: dict = field(default_factory=dict)  # paired difference of the 0/1 outcomes (bootstrap interval)
    detectable_vs_dense: float = NAN  # accuracy difference detectable at 80 % power given this discordance
    baseline: str = ""
    vs_baseline: list = field(default_factory=lambda: [0, 0])
    p_vs_baseline: float = NAN
    diff_vs_baseline: dict = field(default_factory=dict)
    kv_fraction: float = NAN  # median over items of cache bytes after the context / dense bytes
    kv_bytes: float = NAN  # median cache bytes after the context
    prefill_s: float = NAN
    decode_s: float = NAN
    decode_tok_s: float = NAN  # median (question + answer tokens) / decode seconds
    cache: str = ""
    cache_note: str = ""
    plan: dict = field(default_factory=dict)
    outcomes: list = field(default_factory=list)  # [task, index, correct, score] per item, in item order


@dataclass
class SuiteResult:
    rows: list[SuiteRow]
    suite: dict
    calibration: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"suite": self.suite, "calibration": self.calibration, "rows": [asdict(r) for r in self.rows]}


def _auto_baseline(label: str, p, runs) -> str:
    if not plan_id.is_plan(p) or p.meta.get("method") == "uniform":
        return ""
    for other, q in runs:
        if plan_id.is_plan(q) and q.meta.get("method") == "uniform" and other != label:
            a, b = q.meta.get("budget"), p.meta.get("budget")
            if a is not None and b is not None and abs(float(a) - float(b)) < 1e-9:
                return other
    return ""


def evaluate_suite(
    model,
    tokenizer,
    configs: Sequence[tuple[str, Any]],
    items: Sequence[SuiteItem],
    *,
    question: str = "inside",
    prefill: str = "sparse",
    dense_layers: Sequence[int] = (0,),
    log: TrialLog | None = None,
    baseline: str | None = None,
    progress: Callable[[str], None] | None = None,
    suite: dict | None = None,
) -> SuiteResult:
    """Dense and every config on every item (configs alternate in order from item to item); trials already in
    ``log`` are not rerun. ``question``: "inside" (RULER's prompt, the question prefilled with the context) or
    "after" (fed after the context, kvpress's protocol); ``prefill`` for patterns and plans (see ``generate``)."""
    if question not in QUESTIONS:
        raise ValueError(f"question must be one of {QUESTIONS}, got {question!r}")
    if not items:
        raise ValueError("items is empty: need at least one suite item")
    labels = ["dense"] + [label for label, _ in configs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"config labels must be distinct and not 'dense', got {labels}")
    if baseline is not None and baseline not in labels:
        raise ValueError(f"baseline {baseline!r} is not one of the configs: {labels}")
    for _, p in configs:
        if plan_id.is_plan(p):
            p.check_model(model)
    log = log or TrialLog()
    runs: list[tuple[str, Any]] = [("dense", None), *configs]
    eos = eos_ids(model)
    encoded: list[Encoded] = [encode(it, tokenizer, question_inside=question == "inside") for it in items]
    keys = [item_key(it) for it in items]
    for idx, (it, enc) in enumerate(zip(items, encoded)):
        for label, p in order(runs, idx):
            key = trial_key(it, keys[idx], label, p, question, prefill, dense_layers)
            if log.find(**key) is None:
                g = generate(
                    model, enc.context_ids, enc.question_ids, it.max_new, p, prefill=prefill, dense_layers=dense_layers, eos=eos
                )
                text = tokenizer.decode(g["tokens"], skip_special_tokens=True)
                s = score(text, it.answers, it.metric)
                log.add({**key, **g, "text": text, "score": s, "correct": s >= 1.0})
            if progress:
                progress(f"{it.task} {it.index} · {label}")
    rows = summarize(log, runs, items, keys, question=question, prefill=prefill, dense_layers=dense_layers, baseline=baseline)
    meta = dict(suite or {})
    meta.setdefault("items", len(items))
    return SuiteResult(rows, meta)


def trial_key(it: SuiteItem, ikey: str, label: str, p, question: str, prefill: str, dense_layers) -> dict:
    return {
        "kind": "suite",
        "task": it.task,
        "index": it.index,
        "length": it.length,
        "item": ikey,
        "label": label,
        "setting": setting(p, dense_layers),
        "question": question,
        "prefill": "dense" if p is None else prefill,
    }


def _median(xs) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(statistics.median(xs)) if xs else NAN


def summarize(
    log: TrialLog,
    runs: Sequence[tuple[str, Any]],
    items: Sequence[SuiteItem],
    keys: Sequence[str],
    *,
    question: str,
    prefill: str,
    dense_layers: Sequence[int] = (0,),
    baseline: str | None = None,
) -> list[SuiteRow]:
    """The rows of every run from the logged trials (see :class:`SuiteRow`)."""
    tasks = list(dict.fromkeys(it.task for it in items))
    recs: dict[str, list[Any]] = {
        label: [log.find(**trial_key(it, k, label, p, question, prefill, dense_layers)) for it, k in zip(items, keys)]
        for label, p in runs
    }
    for label, rs in recs.items():
        missing = sum(r is None for r in rs)
        if missing:
            raise ValueError(f"{label}: {missing} of {len(rs)} items have no logged trial; run evaluate_suite first")
    outcome = {label: [bool(r["correct"]) for r in rs] for label, rs in recs.items()}  # type: ignore[index]
    rows = []
    length = max(it.length for it in items)
    for label, p in runs:
        rs: list[dict] = recs[label]  # type: ignore[assignment]
        kind = "dense" if p is None else ("plan" if plan_id.is_plan(p) else "pattern")
        row = SuiteRow(
            label=label,
            kind=kind,
            pattern=setting(p, dense_layers),
            length=length,
            question=question,
            prefill="dense" if p is None else prefill,
        )
        accs, rulers = [], []
        for t in tasks:
            idx = [i for i, it in enumerate(items) if it.task == t]
            ok = [outcome[label][i] for i in idx]
            k = sum(ok)
            entry: dict[str, Any] = {
                "n": len(idx),
                "correct": k,
                "accuracy": k / len(idx),
                "ci": list(wilson_interval(k, len(idx))),
                "ruler": 100 * sum(rs[i]["score"] for i in idx) / len(idx),
            }
            if p is not None:
                mc = mcnemar_exact(ok, [outcome["dense"][i] for i in idx])
                entry["vs_dense"], entry["p_vs_dense"] = [mc.only_a, mc.only_b], mc.pvalue
            row.tasks[t] = entry
            accs.append(entry["accuracy"])
            rulers.append(entry["ruler"])
        mine = outcome[label]
        row.items, row.correct = len(mine), sum(mine)
        row.accuracy = row.correct / row.items
        row.acc_ci = list(wilson_interval(row.correct, row.items))
        row.average, row.ruler = sum(accs) / len(accs), sum(rulers) / len(rulers)
        if p is not None:
            _compare(row, mine, outcome["dense"], "dense")
        base = baseline if baseline is not None else _auto_baseline(label, p, runs)
        if base and base != label:
            _compare(row, mine, outcome[base], "baseline")
            row.baseline = base
        row.kv_fraction = _median([r["kv_fraction"] for r in rs])
        row.kv_bytes = _median([r["cache_bytes"] for r in rs])
        row.prefill_s = _median([r["prefill_s"] for r in rs])
        row.decode_s = _median([r["decode_s"] for r in rs])
        row.decode_tok_s = _median([(r["n_new"] + r["question_tokens"]) / r["decode_s"] for r in rs if r["decode_s"] > 0])
        row.cache = "+".join(sorted({r["cache"] for r in rs}))
        row.cache_note = "; ".join(sorted({r["cache_note"] for r in rs if r.get("cache_note")}))
        if plan_id.is_plan(p):
            row.plan = plan_id.summary(p, getattr(p, "source", None))
        row.outcomes = [[it.task, it.index, bool(r["correct"]), float(r["score"])] for it, r in zip(items, rs)]
        rows.append(row)
    return rows


def _compare(row: SuiteRow, mine: list[bool], other: list[bool], what: str) -> None:
    mc = mcnemar_exact(mine, other)
    diff = paired_difference([float(x) for x in mine], [float(x) for x in other])
    if what == "dense":
        row.vs_dense, row.p_vs_dense, row.diff_vs_dense = [mc.only_a, mc.only_b], mc.pvalue, diff
        d = (mc.only_a + mc.only_b) / len(mine)
        row.detectable_vs_dense = detectable_difference(len(mine), d) if d > 0 else NAN
    else:
        row.vs_baseline, row.p_vs_baseline, row.diff_vs_baseline = [mc.only_a, mc.only_b], mc.pvalue, diff


# ---------------------------------------------------------------------------------------------- calibration
_NORM = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _NORM.sub(" ", text.lower()).strip()


def shared_spans(texts_a: Sequence[str], texts_b: Sequence[str], span: int = 96) -> int:
    """How many ``span``-character windows (sampled every span/2 characters) of the ``texts_a`` occur anywhere in
    the ``texts_b`` (case and whitespace normalised): 0 means no common run of 1.5 x span characters or more."""
    if span < 8:
        raise ValueError(f"span must be >= 8 characters, got {span}")
    step = span // 2
    grams = {t[i : i + span] for t in map(_norm, texts_a) for i in range(0, max(0, len(t) - span) + 1, step)}
    hits = 0
    for t in map(_norm, texts_b):
        for i in range(0, max(0, len(t) - span) + 1):
            if t[i : i + span] in grams:
                hits += 1
    return hits


def calibration_texts(tokenizer, plans: Sequence[Any] = (), defaults: bool = True) -> dict[str, list[str]]:
    """The calibration inputs the planners read, by planner: duo's synthetic training samples, MoA's profiling
    prompts and the retrieval needles' prompts, made with each given plan's recorded calibration settings (and the
    planners' defaults when ``defaults``). Model-free: only the data generators run."""
    from ...measure.retrieval import build_case
    from ..plans.duo.data import make_sample
    from ..plans.duo.train import DuoSettings
    from ..plans.moa.planner import DEFAULT_LENGTHS, _prompt_ids
    from ..plans.retrieval import RETRIEVAL_DEPTHS, RETRIEVAL_LENGTHS, RETRIEVAL_NEEDLES

    out: dict[str, list[str]] = {"duo": [], "moa": [], "retrieval": []}
    duo_cfgs: list[tuple[Any, ...]] = []
    moa_cfgs: list[tuple[Any, ...]] = []
    ret_cfgs: list[tuple[Any, ...]] = []
    if defaults:
        d = DuoSettings()
        duo_cfgs.append((list(d.lengths), d.items, 0, d.n_facts))
        moa_cfgs.append((list(DEFAULT_LENGTHS), 4, 0))
        ret_cfgs.append((list(RETRIEVAL_LENGTHS), list(RETRIEVAL_DEPTHS), list(RETRIEVAL_NEEDLES), 0))
    for p in plans:
        m = getattr(p, "meta", {}) or {}
        cal = m.get("calibration") or {}
        method, seed = m.get("method"), int(cal.get("seed", m.get("seed", 0)) or 0)
        if method == "duo" and cal:
            duo_cfgs.append((list(cal.get("lengths", [1024])), int(cal.get("items", 12)), seed, int(cal.get("n_facts", 4))))
        elif method == "moa" and cal:
            moa_cfgs.append((list(cal.get("lengths", DEFAULT_LENGTHS)), int(cal.get("items", 4)), seed))
        elif method == "retrieval" and cal:
            ret_cfgs.append((list(cal["lengths"]), list(cal["depths"]), list(cal["needles"]), seed))
    for lengths, n_items, seed, n_facts in dict.fromkeys(tuple(map(_tup, c)) for c in duo_cfgs):
        for i in range(n_items):
            s = make_sample(tokenizer, int(lengths[i % len(lengths)]), seed * 100_003 + i, n_facts=n_facts)
            out["duo"].append(tokenizer.decode(s.input_ids.tolist()))
    for lengths, n_items, seed in dict.fromkeys(tuple(map(_tup, c)) for c in moa_cfgs):
        for n in lengths:
            for i in range(n_items):
                ids = _prompt_ids(None, tokenizer, int(n), i, seed, "prose")
                out["moa"].append(tokenizer.decode(ids[0].tolist()))
    for lengths, depths, needles, seed in dict.fromkeys(tuple(map(_tup, c)) for c in ret_cfgs):
        for n in lengths:
            for dp in depths:
                for k in needles:
                    ids, _, _ = build_case(tokenizer, int(n), float(dp), int(k), seed=seed)
                    out["retrieval"].append(tokenizer.decode(ids[0].tolist()))
    return out


def _tup(x) -> Any:
    return tuple(x) if isinstance(x, list) else x


def calibration_check(tokenizer, items: Sequence[SuiteItem], plans: Sequence[Any] = (), span: int = 96) -> dict:
    """Disjointness of the suite from the planners' calibration data, stated and measured:

    * by hash: the suite's source passages (essay windows, SQuAD paragraphs) vs every passage the planners
      calibrate on (every paragraph of CPython's help prose, ``headlab.data.prose``: all three planners draw only
      from it, whatever their seed) — ``shared_passages`` must be 0;
    * by text: ``span``-character windows of every suite prompt found in the actual calibration inputs of the
      given plans (and the planners' defaults) — ``shared_spans`` must be 0;
    * a plan calibrated on the user's own file (``sparsify plan --calib FILE``, recorded with its sha256): the
      whole file joins the text check when it is still there with the same bytes; otherwise the check cannot be
      made, the file is listed under ``user_files`` with the reason, and ``disjoint`` is False.
    """
    from ...data.calib import read_calib
    from ...data.prose import texts

    corpus = {passage_hash(t) for t in texts()}
    suite_sources = {h for it in items for h in it.sources}
    cal = calibration_texts(tokenizer, plans)
    flat = [t for ts in cal.values() for t in ts]
    user_files: list[dict] = []
    for p in plans:
        src = ((getattr(p, "meta", {}) or {}).get("calibration") or {}).get("source")
        if not src:
            continue
        rec = {"file": src.get("file"), "sha256": src.get("sha256"), "checked": False}
        try:
            c = read_calib(src["file"], "calibration file")
        except (KeyError, ValueError) as exc:
            rec["reason"] = f"cannot read it: {exc}"
        else:
            if c.sha256 != src.get("sha256"):
                rec["reason"] = f"its bytes changed since the plan was made (sha256 {c.sha256[:12]}…)"
            else:
                flat.append(c.text)
                rec["checked"] = True
        user_files.append(rec)
    spans = shared_spans([it.context for it in items], flat, span)
    return {
        "corpus": "CPython help prose (pydoc_data.topics): every passage any planner calibrates on",
        "corpus_passages": len(corpus),
        "suite_passages": len(suite_sources),
        "shared_passages": len(corpus & suite_sources),
        "calibration_texts": {k: len(v) for k, v in cal.items()},
        "span_chars": span,
        "shared_spans": spans,
        "user_files": user_files,
        "disjoint": not (corpus & suite_sources) and spans == 0 and all(u["checked"] for u in user_files),
    }


# ---------------------------------------------------------------------------------------------- report
def _num(x, fmt: str = ".2f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{fmt}}"


def _vs(pair, p) -> str:
    return "–" if p is None or (isinstance(p, float) and math.isnan(p)) else f"+{pair[0]}/−{pair[1]}, p={p:.2g}"


def format_suite_table(res: SuiteResult) -> str:
    """Markdown: one row per configuration, per-task accuracy (k/n), the average with its Wilson interval, RULER's
    mean score, McNemar vs dense and vs the baseline, KV fraction, prefill and decode medians."""
    rows = res.rows
    tasks = list(rows[0].tasks) if rows else []
    head = (
        ["config", "KV fraction"]
        + tasks
        + ["average [95% CI]", "RULER score", "vs dense", "vs baseline", "prefill s", "decode s", "cache"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label, _num(r.kv_fraction, ".3f")]
        cells += [f"{r.tasks[t]['correct']}/{r.tasks[t]['n']}" for t in tasks]
        cells += [
            f"{100 * r.average:.1f} [{100 * r.acc_ci[0]:.1f}, {100 * r.acc_ci[1]:.1f}] ({r.correct}/{r.items})",
            _num(r.ruler, ".1f"),
            _vs(r.vs_dense, r.p_vs_dense) if r.kind != "dense" else "–",
            (_vs(r.vs_baseline, r.p_vs_baseline) + f" vs {r.baseline}") if r.baseline else "–",
            _num(r.prefill_s),
            _num(r.decode_s),
            r.cache + (" (fallback)" if r.cache_note else ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    s = res.suite
    notes = [
        "",
        f"Suite {s.get('name', 'long')}: {s.get('n', '?')} items per task at {s.get('length', '?')} tokens, seed "
        f"{s.get('seed', '?')}, digest {s.get('digest', '?')}; question {rows[0].question if rows else '?'} the context; "
        "accuracy = every reference found (RULER's string_match_all; qa: string_match_part); RULER score = RULER's "
        "mean per-item score.",
    ]
    cal = res.calibration
    if cal:
        notes.append(
            f"Calibration data: {cal['shared_passages']} of {cal['suite_passages']} suite passages among the "
            f"{cal['corpus_passages']} calibration passages; {cal['shared_spans']} shared {cal['span_chars']}-character "
            f"spans with {sum(cal['calibration_texts'].values())} calibration inputs ({'disjoint' if cal['disjoint'] else 'NOT disjoint'})."
        )
    power = [r for r in rows if r.kind != "dense" and not math.isnan(r.detectable_vs_dense)]
    if power:
        notes.append(
            "Power (exact McNemar, alpha 0.05, 80 %): "
            + "; ".join(
                f"{r.label}: discordance {(r.vs_dense[0] + r.vs_dense[1]) / r.items:.2f} -> detectable "
                f"{100 * r.detectable_vs_dense:.0f} points over {r.items} items"
                for r in power
            )
            + "."
        )
    return "\n".join(lines + notes) + "\n"


def plot_suite(res: SuiteResult, path) -> None:
    """Per-task accuracy (Wilson 95 % bars) of every configuration, and the average."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ...io import atomic_write_png

    rows = res.rows
    tasks = list(rows[0].tasks) + ["average"]
    fig = Figure(figsize=(max(8, 1.3 * len(tasks) + 2), 4.2))
    ax = fig.subplots()
    width = 0.8 / max(1, len(rows))
    for j, r in enumerate(rows):
        ys, lo, hi = [], [], []
        for t in tasks:
            if t == "average":
                y, ci = r.average, r.acc_ci
            else:
                y, ci = r.tasks[t]["accuracy"], r.tasks[t]["ci"]
            ys.append(y)
            lo.append(max(0.0, y - ci[0]))
            hi.append(max(0.0, ci[1] - y))
        xs = [i + (j - (len(rows) - 1) / 2) * width for i in range(len(tasks))]
        ax.bar(xs, ys, width, label=r.label[:28], color="black" if r.kind == "dense" else f"C{j}")
        ax.errorbar(xs, ys, [lo, hi], fmt="none", color="grey", lw=0.8, capsize=2)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (Wilson 95 %)")
    ax.set_title(f"long-context suite at {res.suite.get('length', '?')} tokens", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_png(path, fig)


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_suite_report(res: SuiteResult, out_dir, command: str = "") -> Path:
    """results.json, table.md and plot.png in ``out_dir`` (each written atomically; the trial log beside them)."""
    from ...io import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", _json_safe({"command": command, **res.to_dict()}))
    atomic_write_text(out / "table.md", (f"`{command}`\n\n" if command else "") + format_suite_table(res))
    plot_suite(res, out / "plot.png")
    return out
