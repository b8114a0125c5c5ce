"""Whole-model prefill with a heterogeneous per-KV-head plan, through ``attach``, against dense SDPA.

SmolLM2-135M-Instruct (30 layers, 9 query / 3 KV heads), ``--tokens`` prompt tokens (default 4096,
seeded random ids: prefill time does not depend on the text), ``logits_to_keep=1``. The plan: in
every layer one KV head of three stays ``causal()`` (KV head ``layer % 3``) and the other two are
``sink_window(64, --window)`` (DuoAttention-style retrieval / streaming heads). With it
``sparse_attend`` runs the full heads through one SDPA call on their 3 query heads and the
streaming heads through the band kernel (``headlab.kernels.heads``). One untimed warm-up each (where
``auto`` measures band+sdpa against FlexAttention, at most 4 layer layouts), then dense and plan
alternate ``--repeats`` times; median and range. ``--gather`` adds the gather backend (the path
such plans took before) as a third alternating contender.

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_plan_prefill.py [--tokens 4096] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts

import torch  # noqa: E402


def plan_for(n_layers: int, window: int, sink: int = 64) -> dict:
    from headlab import patterns as P

    return {
        layer: P.per_head([P.causal() if h == layer % 3 else P.sink_window(sink, window) for h in range(3)], kv_per_head=True)
        for layer in range(n_layers)
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gather", action="store_true", help="also time the plan on the gather backend")
    a = ap.parse_args()
    if a.tokens < 2 or a.tokens > 8192:
        raise SystemExit(f"--tokens must be in [2, 8192] (SmolLM2's context), got {a.tokens}")
    if a.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {a.repeats}")
    torch.set_num_threads(a.threads)
    import headlab
    import headlab.kernels as K
    from headlab import attach
    from headlab.kernels import autotune, last_backend
    from headlab.timing import alternate, load_text, timed

    model, _ = headlab.load()
    n_layers = model.config.num_hidden_layers
    plan = plan_for(n_layers, a.window)
    ids = torch.randint(0, model.config.vocab_size, (1, a.tokens), generator=torch.Generator().manual_seed(0))
    real = K.sparse_attend
    ran: set[str] = set()

    def dense():
        return model(input_ids=ids, logits_to_keep=1).logits

    def planned(backend="auto"):
        def fn(*x, **kw):
            out = real(*x, **{**kw, "backend": backend})
            ran.add(last_backend())
            return out

        def run():
            K.sparse_attend = fn
            try:
                with attach(model, pattern=plan):
                    return model(input_ids=ids, logits_to_keep=1).logits
            finally:
                K.sparse_attend = real

        return run

    runs = {"dense": dense, "plan": planned()}
    if a.gather:
        runs["plan (gather)"] = planned("gather")
    with torch.no_grad():
        outs = {}
        for n, fn in runs.items():  # the warm-up, timed for the log
            wall, _, outs[n] = timed(fn)
            print(f"warm-up {n}: {wall:.1f} s", flush=True)
        t = alternate(
            runs,
            a.repeats,
            warmup=0,
            reverse=False,
            on_sample=lambda r, n, w, _: print(f"repeat {r + 1} {n}: {w:.2f} s", flush=True),
        )
    times = t.wall
    d = t.median("dense")
    load = load_text()
    print(
        f"\nSmolLM2-135M, {a.tokens} tokens, logits_to_keep=1, {a.threads} threads, {a.repeats} alternating repeats; "
        f"plan: 1 of 3 KV heads causal, 2 sink_window(64, {a.window}), every layer; load average {load}"
    )
    print(
        f"plan kernels that ran: {sorted(ran)}; density at {a.tokens}: "
        f"{plan[0].density(a.tokens, a.tokens):.3f}; last-token logits max |plan - dense| "
        f"{(outs['plan'] - outs['dense']).abs().max().item():.3f}"
    )
    for key, dec in autotune.DECISIONS.items():
        print(
            f"auto measured {key[0]}: chose {dec.backend} (" + ", ".join(f"{n} {dec.median(n):.3f} s" for n in dec.samples) + ")"
        )
    print("| run | median s | range s | speedup vs dense |\n|---|---|---|---|")
    for n in times:
        s = t.spread(n)
        print(f"| {n} | {s['median']:.2f} | {s['min']:.2f}–{s['max']:.2f} | {d / s['median']:.2f}x |")


if __name__ == "__main__":
    main()
