"""Training-free sparse-attention swaps on a real model, measured: passkey retrieval accuracy,
perplexity on real prose and whole-model prefill wall time, dense vs each pattern vs a
StreamingLLM sink+window of matched density (the head-blind control: StreamingLLM, arXiv 2309.17453).

    from headlab import sparsify, load
    model, tok = load()
    rows = sparsify.evaluate(model, tok, [("power", patterns.power(64, 4, 1))], lengths=[2048], trials=20)
    sparsify.write_report(rows, "runs/sparsify")   # results.json, table.md, plot.png

Every sparse pattern leaves ``dense_layers`` dense (default: layer 0). A per-head plan
(``headlab.patterns.headplan.load_plan``) is applied as it is, and for plans the evaluation also
times greedy decoding at the prompt's length (``decode``, with the plan's compressed KV cache when
``headlab.kv_cache`` accepts it) and reports KV-cache bytes, Wilson intervals and paired McNemar
tests (``headlab.stats``); ``report`` writes the table and plots, ``log`` the resumable trial log.
Passkey items come from ``headlab.data.passkey`` with needle depths spread over 10-90 %.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...patterns.base import Pattern
from ...patterns.presets import matched_window
from ...stats import mcnemar_exact, wilson_interval
from ...timing import order
from . import plan_id
from .decode import decode_record, dense_kv_bytes
from .log import TrialLog
from .report import EvalResult

NAN = float("nan")


def passkey_depths(trials: int) -> list[float]:
    """``trials`` needle depths spread evenly over 10 %-90 %."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    return [0.1 + 0.8 * t / max(1, trials - 1) for t in range(trials)] if trials > 1 else [0.5]


@dataclass
class Row:
    label: str
    pattern: str
    length: int
    density: float  # density of the pattern itself (causal pairs)
    model_density: float  # averaged over all layers (dense layers count 1)
    accuracy: float
    trials: int
    ppl: float
    prefill_s: float  # median whole-model prefill time of one passkey prompt
    speedup: float = 1.0  # dense median prefill time / this one (same length, timed interleaved)
    answer_logprob: float = float("nan")  # mean log-probability of the key's tokens
    by_depth: list = field(default_factory=list)  # [needle depth, correct, key log-prob] per trial
    kind: str = "pattern"  # "dense" | "pattern" | "plan"
    correct: int = 0  # passkey prompts answered right (of ``trials``)
    acc_ci: list = field(default_factory=lambda: [NAN, NAN])  # Wilson 95 % interval of the accuracy
    vs_dense: list = field(default_factory=lambda: [0, 0])  # McNemar discordant pairs [only this right, only dense right]
    p_vs_dense: float = NAN  # exact McNemar p-value vs dense on the same prompts
    baseline: str = ""  # the config compared in p_vs_baseline ("" = none)
    vs_baseline: list = field(default_factory=lambda: [0, 0])
    p_vs_baseline: float = NAN
    kv_fraction: float = 1.0  # KV-cache bytes / dense KV-cache bytes at this length (patterns keep the full cache)
    kv_bytes: int = 0  # KV-cache bytes at this length: dense x kv_fraction
    kv_bytes_measured: float = NAN  # bytes the cache used for decoding held after the prefill (median)
    cache: str = ""  # the cache decoding used: "full" | "compressed" ("" = decode not timed)
    cache_note: str = ""  # why the compressed cache was not used, if it was not
    decode_tok_s: float = NAN  # median greedy decode tokens/s at this length
    decode_tok_s_range: list = field(default_factory=list)  # [min, max] over the timed prompts
    decode_speedup: float = NAN  # median over prompts of dense decode time / this decode time (interleaved)
    decode_prompts: int = 0  # prompts decode was timed on
    decode_tokens: int = 0  # new tokens per timed decode
    decode_by_prompt: list = field(
        default_factory=list
    )  # [seed, tok/s, decode s, prefill s, cache bytes, cache] per timed prompt
    plan: dict = field(default_factory=dict)  # the plan's meta (method, budget, ...) + hash and source


def _layer_map(p: Pattern | None, n_layers: int, dense_layers: Sequence[int]):
    if p is None:
        return None
    return {layer: p for layer in range(n_layers) if layer not in set(dense_layers)}


@torch.no_grad()
def perplexity(model, tokenizer, n_tokens: int, seed: int = 0, source: str = "essays") -> float:
    """Perplexity of the model on ``n_tokens`` tokens of real prose ("essays": RULER's Paul Graham
    essays; "pydoc": CPython help prose), from a seed not used by the passkey items."""
    from ...data.passkey import haystack_ids

    x = torch.tensor([haystack_ids(tokenizer, n_tokens, seed + 101, source)], device=next(model.parameters()).device)
    out = model(input_ids=x, labels=x, use_cache=False)
    return float(torch.exp(out.loss))


def plan_runs(configs: Sequence[tuple[str, Any]], n: int, matched: bool) -> list[tuple[str, Any]]:
    """dense, then every config followed by its matched-density sink_window (when ``matched``;
    patterns only: a per-head plan is compared with other plans, e.g. ``uniform``)."""
    runs: list[tuple[str, Any]] = [("dense", None)]
    for label, p in configs:
        runs.append((label, p))
        if matched and p is not None and not plan_id.is_plan(p):
            w = matched_window(p.nominal_density(n), n)
            runs.append((f"{w.describe()} [matched to {label}]", w))
    return runs


def evaluate(
    model,
    tokenizer,
    configs: Sequence[tuple[str, Any]],
    lengths: Sequence[int],
    trials: int = 20,
    dense_layers: Sequence[int] = (0,),
    matched: bool = True,
    progress=None,
    source: str = "essays",
    log: TrialLog | None = None,
    decode_prompts: int = 3,
    decode_tokens: int = 32,
    baseline: str | None = None,
) -> EvalResult:
    """Dense + every config (+ a sink_window of matched density when ``matched``) at each length.

    A config is a Pattern (applied to every layer except ``dense_layers``) or a per-head plan
    (``load_plan``; applied to its own layers as it is). Passkey prompts are exactly ``n`` tokens
    (``passkey_ids``); for each prompt every configuration runs in turn (in alternating order), so
    the prefill timings of dense and sparse are interleaved and their ratio is robust to other load
    on the machine. When plans are present, greedy decoding of ``decode_tokens`` new tokens after
    each of the first ``decode_prompts`` prompts is timed the same way for dense and every plan
    (0 turns it off). ``baseline``: the label of a config every other config is also compared with
    (McNemar); by default a plan is compared with a ``uniform`` plan of the same budget when there is
    one. ``log`` (a ``TrialLog``) records every trial and lets a stopped run resume."""
    from ...data.passkey import check_answer, passkey_ids
    from ...engine.hf import attach, model_shape

    n_layers = model_shape(model)[0]
    for layer in dense_layers:
        if not 0 <= layer < n_layers:
            raise ValueError(f"dense layer {layer} out of range: valid layers are 0..{n_layers - 1}")
    if decode_prompts < 0 or decode_tokens < 2:
        raise ValueError(f"decode_prompts must be >= 0 and decode_tokens >= 2, got {decode_prompts} and {decode_tokens}")
    for _, p in configs:
        if plan_id.is_plan(p):
            p.check_model(model)
    labels = ["dense"] + [label for label, _ in configs]
    if baseline is not None and baseline not in labels:
        raise ValueError(f"baseline {baseline!r} is not one of the configs: {labels}")
    log = log or TrialLog()
    rows: list[Row] = []
    for n in lengths:
        items = [passkey_ids(tokenizer, n, d, seed=s, source=source) for s, d in enumerate(passkey_depths(trials))]
        runs = plan_runs(configs, n, matched)
        timed = [(label, p) for label, p in runs if p is None or plan_id.is_plan(p)]
        timed = timed if len(timed) > 1 else []  # decode is timed when plans are present

        def context(p):
            if plan_id.is_plan(p):
                return attach(model, pattern=p)
            layer_map = _layer_map(p, n_layers, dense_layers)
            return attach(model, pattern=layer_map) if layer_map else contextlib.nullcontext()

        for idx, it in enumerate(items):
            for label, p in order(runs, idx):
                key = dict(
                    kind="passkey", length=n, label=label, seed=it.seed, depth=it.depth, **_setting(p, source, dense_layers)
                )
                if log.find(**key) is None:
                    with context(p):
                        t0 = time.perf_counter()
                        ok, logp = check_answer(model, tokenizer, it)
                        dt = time.perf_counter() - t0
                    log.add({**key, "correct": ok, "logprob": logp, "seconds": dt})
                if progress:
                    progress(f"{n} tok · {label}")
            if idx >= decode_prompts:
                continue
            for label, p in order(timed, idx):
                key = dict(
                    kind="decode",
                    length=n,
                    label=label,
                    seed=it.seed,
                    depth=it.depth,
                    new_tokens=decode_tokens,
                    **_setting(p, source, dense_layers),
                )
                if log.find(**key) is None:
                    log.add({**key, **decode_record(model, p, it.input_ids, decode_tokens)})
                if progress:
                    progress(f"{n} tok · {label} (decode)")
        for label, p in runs:
            key = dict(kind="ppl", length=n, label=label, **_setting(p, source, dense_layers))
            if log.find(**key) is None:
                with context(p):
                    log.add({**key, "ppl": perplexity(model, tokenizer, n, source=source)})
            if progress:
                progress(f"{n} tok · {label} (ppl)")
        seeds = [(it.seed, it.depth) for it in items]
        rows.extend(
            _rows(
                log,
                runs,
                n,
                source,
                seeds,
                n_layers,
                dense_layers,
                model=model,
                decode_seeds=seeds[:decode_prompts] if timed else [],
                decode_tokens=decode_tokens,
                baseline=baseline,
            )
        )
    return EvalResult(rows)


def _setting(p, source: str, dense_layers: Sequence[int]) -> dict:
    """What a logged record depends on besides length/label/seed (so --resume never mixes settings);
    a plan is identified by name, method, budget and a hash of its per-head entries."""
    if plan_id.is_plan(p):
        return {"pattern": "plan " + plan_id.identity(p), "source": source, "dense_layers": "plan"}
    return {
        "pattern": "dense" if p is None else p.describe(),
        "source": source,
        "dense_layers": [] if p is None else sorted(set(dense_layers)),
    }


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else NAN


def _auto_baseline(label: str, p, runs) -> str:
    """For a non-uniform plan: the label of a ``uniform`` plan with the same budget, if one runs."""
    if not plan_id.is_plan(p) or p.meta.get("method") == "uniform":
        return ""
    for other_label, q in runs:
        if (
            plan_id.is_plan(q)
            and q.meta.get("method") == "uniform"
            and other_label != label
            and q.meta.get("budget") is not None
            and p.meta.get("budget") is not None
            and abs(float(q.meta["budget"]) - float(p.meta["budget"])) < 1e-9
        ):
            return other_label
    return ""


def _rows(
    log: TrialLog,
    runs,
    n: int,
    source: str,
    seeds: Sequence[tuple[int, float]],
    n_layers: int,
    dense_layers,
    model=None,
    decode_seeds: Sequence[tuple[int, float]] = (),
    decode_tokens: int = 32,
    baseline: str | None = None,
) -> list[Row]:
    full_bytes = dense_kv_bytes(model, n) if model is not None else 0
    passkey = {
        label: [
            log.find(kind="passkey", length=n, label=label, seed=s, depth=d, **_setting(p, source, dense_layers))
            for s, d in seeds
        ]
        for label, p in runs
    }
    decode = (
        {
            label: [
                log.find(
                    kind="decode",
                    length=n,
                    label=label,
                    seed=s,
                    depth=d,
                    new_tokens=decode_tokens,
                    **_setting(p, source, dense_layers),
                )
                for s, d in decode_seeds
            ]
            for label, p in runs
            if p is None or plan_id.is_plan(p)
        }
        if decode_seeds
        else {}
    )
    out: list[Row] = []
    dense_time = None
    for label, p in runs:
        setting = _setting(p, source, dense_layers)
        recs = passkey[label]
        times = sorted(r["seconds"] for r in recs)
        t = times[len(times) // 2]  # median
        if p is None:
            dense_time = t
        is_plan = plan_id.is_plan(p)
        if p is None:
            dens, model_dens = 1.0, 1.0
        elif is_plan:
            dens = model_dens = p.density(n)
        else:
            dens = p.nominal_density(n)
            n_sparse = n_layers - len(set(dense_layers))
            model_dens = (n_layers - n_sparse + n_sparse * dens) / n_layers
        correct = [bool(r["correct"]) for r in recs]
        k = sum(correct)
        row = Row(
            label=label,
            pattern="dense" if p is None else ("plan " + plan_id.identity(p) if is_plan else p.describe()),
            length=n,
            density=dens,
            model_density=model_dens,
            accuracy=k / len(recs),
            trials=len(recs),
            ppl=log.find(kind="ppl", length=n, label=label, **setting)["ppl"],
            prefill_s=t,
            speedup=(dense_time / t) if dense_time else 1.0,
            answer_logprob=sum(r["logprob"] for r in recs) / len(recs),
            by_depth=[[r["depth"], r["correct"], r["logprob"]] for r in recs],
            kind="dense" if p is None else ("plan" if is_plan else "pattern"),
            correct=k,
            acc_ci=list(wilson_interval(k, len(recs))),
        )
        if p is not None:
            mc = mcnemar_exact(correct, [bool(r["correct"]) for r in passkey["dense"]])
            row.vs_dense, row.p_vs_dense = [mc.only_a, mc.only_b], mc.pvalue
        base = baseline if baseline is not None else _auto_baseline(label, p, runs)
        if base and base != label and base in passkey:
            mc = mcnemar_exact(correct, [bool(r["correct"]) for r in passkey[base]])
            row.baseline, row.vs_baseline, row.p_vs_baseline = base, [mc.only_a, mc.only_b], mc.pvalue
        row.kv_fraction = p.kv_fraction(n) if is_plan else 1.0
        row.kv_bytes = int(round(row.kv_fraction * full_bytes))
        if is_plan:
            row.plan = plan_id.summary(p, getattr(p, "source", None))
        if label in decode:
            drecs = decode[label]
            rates = [r["tok_s"] for r in drecs]
            row.decode_tok_s, row.decode_tok_s_range = _median(rates), [min(rates), max(rates)]
            row.decode_speedup = _median([d["decode_s"] / r["decode_s"] for d, r in zip(decode["dense"], drecs)])
            row.kv_bytes_measured = _median([r["cache_bytes"] for r in drecs])
            kinds = sorted({r["cache"] for r in drecs})
            row.cache = "+".join(kinds)
            row.cache_note = "; ".join(sorted({r["cache_note"] for r in drecs if r.get("cache_note")}))
            row.decode_prompts, row.decode_tokens = len(drecs), decode_tokens
            row.decode_by_prompt = [
                [s, r["tok_s"], r["decode_s"], r["prefill_s"], r["cache_bytes"], r["cache"]]
                for (s, _), r in zip(decode_seeds, drecs)
            ]
        out.append(row)
    return out
