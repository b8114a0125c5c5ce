"""Gather kernel on heads with very different spans (MoA, arXiv 2406.14909; per-head windows):
all heads chunked together vs one head at a time, timed side by side (best of interleaved repeats),
with the number of key blocks each way computes. 8192 tokens, 9 query / 3 KV heads, d = 64, fp32.

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_head_split.py [--tokens 8192] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

from headlab import patterns as P
from headlab.bench.inputs import random_qkv, script_args
from headlab.kernels import build_plan, reference_sparse_attend
from headlab.kernels.gather import _head_work, gather_static
from headlab.timing import alternate


def main() -> None:
    a = script_args(__doc__)
    T = a.tokens
    q, k, v = random_qkv(T)
    cases = [
        (
            "moa (sparsify eval's: spans 256, 128+N/8, N/4, sink 64; per KV head)",
            P.moa([(256, 0.0), (128, 0.125), (0, 0.25)], sink=64, kv_per_head=True),
        ),
        ("per-head windows 128..2048 (9 query heads)", P.per_head([P.window(128 * 2 ** (h % 5)) for h in range(9)])),
    ]
    print(f"T={T}, 9/3 heads, d=64, fp32, {a.threads} threads, best of {a.repeats}")
    print("| pattern | blocks joint | blocks one by one | joint s | one by one s | speedup | max err vs joint |")
    print("|---|---|---|---|---|---|---|")
    for name, p in cases:
        plan = build_plan(p, T, T, 9, 3, 64, True)
        joint_blocks, split_blocks = _head_work(plan)
        calls = {
            "joint": lambda plan=plan: gather_static(q, k, v, plan, 0.125, split_heads=False),
            "split": lambda plan=plan: gather_static(q, k, v, plan, 0.125, split_heads=True),
        }
        t = alternate(calls, a.repeats, warmup=0, reverse=False)
        best = {False: min(t.wall["joint"]), True: min(t.wall["split"])}
        err = (t.last["split"] - t.last["joint"]).abs().max().item()
        print(
            f"| {name} | {joint_blocks} | {split_blocks} | {best[False]:.3f} | {best[True]:.3f} | "
            f"{best[False] / best[True]:.2f}x | {err:.1e} |"
        )
    if T <= 1024:  # small enough for the dense reference
        ref = reference_sparse_attend(q, k, v, cases[0][1], scale=0.125)
        print(
            "moa vs reference:",
            (gather_static(q, k, v, build_plan(cases[0][1], T, T, 9, 3, 64, True), 0.125) - ref).abs().max().item(),
        )


if __name__ == "__main__":
    main()
