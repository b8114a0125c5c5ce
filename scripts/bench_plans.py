"""Prefill and decode speed of per-head plans vs dense on the real model (no quality): whole-model
prefill of one prompt and greedy decoding of --new-tokens tokens after it (with the plan's
compressed KV cache when headlab.kv_cache accepts the plan), repeats alternated
(dense, plans..., then reversed); prints the ratios dense / plan per repeat, median and range.

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_plans.py --plan smollm2-135m-8k --plan uniform.json \
        [--tokens 8192] [--repeats 3] [--new-tokens 32] [--threads 2] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import sys

import torch

from headlab import models
from headlab.patterns.headplan import load_plan
from headlab.sparsify.eval import plan_id
from headlab.sparsify.eval.speed import bench_plans, format_speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", action="append", required=True, help="plan JSON path or shipped name (repeatable)")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    a = ap.parse_args()
    if a.tokens < 256 or a.repeats < 1 or a.new_tokens < 2:
        ap.error(f"need --tokens >= 256, --repeats >= 1, --new-tokens >= 2; got {a.tokens}, {a.repeats}, {a.new_tokens}")
    torch.set_num_threads(a.threads)
    model, tok = models.load(a.model)
    plans, taken = [], {"dense"}
    for x in a.plan:
        try:
            p = load_plan(x, model=model)
        except (ValueError, OSError) as e:
            ap.error(f"--plan {x!r}: {e}")
        label = plan_id.label(p, x, taken)
        taken.add(label)
        plans.append((label, p))
    print(
        f"{a.model}, {a.tokens} tokens, {a.new_tokens} new tokens, {a.threads} threads, {a.repeats} alternating repeats",
        file=sys.stderr,
    )
    rows = bench_plans(model, tok, plans, a.tokens, a.repeats, a.new_tokens, progress=lambda s: print(s, file=sys.stderr))
    print(format_speed(rows))


if __name__ == "__main__":
    main()
