"""Decode speed and KV memory: dense decoding with a full cache vs a per-head plan decoding with
``headlab.kv_cache`` (full heads keep every key, streaming heads keep sink + window; StreamingLLM
arXiv 2309.17453, MoA arXiv 2406.14909). SmolLM2-135M-Instruct by default, prose prompt of exactly
``--tokens`` tokens, greedy single-token steps timed after the prefill, the two configurations
alternated ``--repeats`` times from copies of their prefilled caches; medians and ranges.

The plan's prompt is prefilled once into a full DynamicCache; the compressed cache keeps its part of
it (``HeadKVCache.fill``). Before timing, ``--check`` steps under the plan with the compressed cache
are compared with the same plan on the full cache (max |logit difference|, tokens).

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_decode.py [--tokens 8192] [--steps 64] [--repeats 5]
        [--threads 2] [--plan plan.json | --sink 64 --window 1024 --full-per-layer 1] [--check 8] [--out r.json]

Default plan: in layer l, KV head l mod Hkv stays full and the others keep sink 64 + window 1024.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from transformers import DynamicCache

import headlab
from headlab.engine.hf import model_shape
from headlab.models import DEFAULT_MODEL
from headlab.patterns import causal, sink_window
from headlab.patterns.headplan import load_plan, plan_from_entries
from headlab.sparsify.kvcache.cache import full_kv_nbytes
from headlab.timing import order


def args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--tokens", type=int, default=8192, help="prompt length (default 8192)")
    ap.add_argument("--steps", type=int, default=64, help="decode steps timed per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plan", default=None, help="a HeadPlan json path or shipped plan name (else the built-in plan)")
    ap.add_argument("--sink", type=int, default=64)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--full-per-layer", type=int, default=1, help="KV heads kept full in every layer (built-in plan)")
    ap.add_argument("--check", type=int, default=8, help="steps compared against the plan with a full cache (0: skip)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args()
    for name in ("tokens", "steps", "repeats", "threads"):
        if getattr(a, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(a, name)}")
    return a


def build_plan(model, a):
    if a.plan:
        return load_plan(a.plan, model=model)
    n_layers, _, n_kv = model_shape(model)
    if not 0 <= a.full_per_layer <= n_kv:
        raise SystemExit(f"--full-per-layer must be in [0, {n_kv}], got {a.full_per_layer}")
    rows = []
    for layer in range(n_layers):
        full = {(layer + i) % n_kv for i in range(a.full_per_layer)}
        rows.append([causal() if h in full else sink_window(a.sink, a.window) for h in range(n_kv)])
    return plan_from_entries(
        rows,
        model,
        length=a.tokens,
        name=f"bench {a.full_per_layer} full/layer, sink {a.sink} + window {a.window}",
        method="uniform",
    )


def prompt_ids(tok, n: int) -> torch.Tensor:
    from headlab.data.prose import haystack

    ids = tok(haystack(tok, n + 64), add_special_tokens=False)["input_ids"]
    while len(ids) < n:
        ids = ids + ids
    return torch.tensor(ids[:n])[None]


@torch.no_grad()
def prefill(model, ids, cache):
    out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    return out.logits[0, -1]


@torch.no_grad()
def decode(model, cache, first: torch.Tensor, start: int, steps: int) -> tuple[float, list[int], list[torch.Tensor]]:
    """Greedy steps from token ``first`` at position ``start``: (seconds, tokens, logits)."""
    nxt, toks, logits = first, [], []
    t0 = time.perf_counter()
    for s in range(steps):
        out = model(input_ids=nxt.view(1, 1), position_ids=torch.tensor([[start + s]]), cache=cache, use_cache=True)
        lg = out.logits[0, -1]
        nxt = lg.argmax()
        toks.append(int(nxt))
        logits.append(lg)
    return time.perf_counter() - t0, toks, logits


def main() -> None:
    a = args()
    torch.set_num_threads(a.threads)
    model, tok = headlab.load(a.model)
    model.eval()
    plan = build_plan(model, a)
    ids = prompt_ids(tok, a.tokens)
    T = ids.shape[1]
    print(
        f"{a.model}: prompt {T} tokens, {a.steps} decode steps x {a.repeats} repeats, {a.threads} threads; "
        f"plan {plan.name!r} (kv_fraction {plan.kv_fraction(T):.3f} at {T})",
        flush=True,
    )

    t0 = time.perf_counter()
    dense = DynamicCache(config=model.config)
    first_d = prefill(model, ids, dense).argmax()
    print(f"dense prefill {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    full = DynamicCache(config=model.config)  # the plan's prompt, once: the check's reference and the compressed cache
    with headlab.attach(model, pattern=plan):
        first_p = prefill(model, ids, full).argmax()
    comp = headlab.kv_cache(model, plan).fill(full)
    print(
        f"plan prefill {time.perf_counter() - t0:.1f}s (compressed cache keeps {comp.nbytes() / 2**20:.1f} MiB "
        f"of {full_kv_nbytes(full) / 2**20:.1f})",
        flush=True,
    )

    check = None
    if a.check:
        with headlab.attach(model, pattern=plan):
            sf, tf, lf = decode(model, full, first_p, T, a.check)
            sc, tc, lc = decode(model, copy.deepcopy(comp), first_p, T, a.check)
        err = max((x - y).abs().max().item() for x, y in zip(lf, lc))
        scale = max(x.abs().max().item() for x in lf)
        check = {
            "steps": a.check,
            "max_abs_logit_diff": err,
            "max_abs_logit": scale,
            "same_tokens": tf == tc,
            "plan_full_cache_tok_s": a.check / sf,
            "plan_kv_cache_tok_s": a.check / sc,
        }
        print(
            f"check: plan + kv_cache vs plan + full cache over {a.check} steps: max |dlogit| {err:.2e} "
            f"(logits up to {scale:.1f}), same tokens {tf == tc}; plan with a full cache decodes at "
            f"{a.check / sf:.2f} tok/s",
            flush=True,
        )
    del full

    rates = {"dense": [], "plan": []}
    bytes_ = {}
    for r in range(a.repeats):
        for name in order(("dense", "plan"), r):
            if name == "dense":
                c = copy.deepcopy(dense)
                s, _, _ = decode(model, c, first_d, T, a.steps)
                bytes_["dense"] = full_kv_nbytes(c)
            else:
                c = copy.deepcopy(comp)
                with headlab.attach(model, pattern=plan):
                    s, _, _ = decode(model, c, first_p, T, a.steps)
                bytes_["plan"] = c.nbytes()
                bytes_["plan_allocated"] = c.allocated_nbytes()
            rates[name].append(a.steps / s)
            print(f"  repeat {r + 1}/{a.repeats} {name:5s} {a.steps / s:7.2f} tok/s", flush=True)
            del c

    med = {k: statistics.median(v) for k, v in rates.items()}
    n = T + a.steps
    print(f"\n| config | decode tok/s (median) | range | KV bytes at {n} tokens |")
    print("|---|---|---|---|")
    print(
        f"| dense, full cache | {med['dense']:.2f} | {min(rates['dense']):.2f}-{max(rates['dense']):.2f} | {bytes_['dense']:,} |"
    )
    print(
        f"| plan, headlab.kv_cache | {med['plan']:.2f} | {min(rates['plan']):.2f}-{max(rates['plan']):.2f} | "
        f"{bytes_['plan']:,} (buffers {bytes_['plan_allocated']:,}) |"
    )
    print(f"\ndecode speedup {med['plan'] / med['dense']:.2f}x, KV bytes ratio {bytes_['plan'] / bytes_['dense']:.3f}")
    if a.out:
        from headlab.io import atomic_write_json

        atomic_write_json(
            a.out,
            {
                "model": a.model,
                "tokens": T,
                "steps": a.steps,
                "repeats": a.repeats,
                "threads": a.threads,
                "plan": plan.name,
                "tok_s": rates,
                "median_tok_s": med,
                "speedup": med["plan"] / med["dense"],
                "kv_bytes": bytes_,
                "kv_ratio": bytes_["plan"] / bytes_["dense"],
                "check": check,
            },
        )


if __name__ == "__main__":
    main()
