"""Which backend ``sparse_attend(..., backend="auto")`` picks at 8K (measured once), and its speed
against dense causal SDPA, best of interleaved repeats.

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_auto_backend.py [--tokens 8192] [--repeats 3]
"""
from __future__ import annotations

import time

import torch.nn.functional as F

from headlab import patterns as P
from headlab.bench.inputs import random_qkv, script_args
from headlab.kernels import autotune, sparse_attend


def main() -> None:
    a = script_args(__doc__)
    T = a.tokens
    if T < autotune.FLEX_MIN_T:
        raise SystemExit(f"--tokens must be >= {autotune.FLEX_MIN_T} (auto only measures FlexAttention from there), got {T}")
    q, k, v = random_qkv(T)
    ke, ve = k.repeat_interleave(3, 1), v.repeat_interleave(3, 1)
    for name, p in [("window(256)", P.window(256)), ("power(64,4,1)", P.power(64, 4, 1))]:
        t0 = time.perf_counter()
        sparse_attend(q, k, v, p)
        first = time.perf_counter() - t0
        choice, t_gather, t_flex = next(d for key, d in autotune.DECISIONS.items() if key[0] == p.describe())
        td, ta = [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            F.scaled_dot_product_attention(q, ke, ve, is_causal=True)
            td.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sparse_attend(q, k, v, p)
            ta.append(time.perf_counter() - t0)
        print(f"{name}: auto chose {choice} (gather {t_gather:.3f}s / flex {t_flex:.3f}s), first call {first:.1f}s; "
              f"dense {min(td):.3f}s, auto {min(ta):.3f}s, speedup {min(td) / min(ta):.2f}x")


if __name__ == "__main__":
    main()
