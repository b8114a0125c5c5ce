"""What ``sparse_attend(..., backend="auto")`` chooses at 8K and how fast it then is against dense
causal SDPA. The first call measures its default (band / gather) and compiled FlexAttention warm,
``autotune.SAMPLES`` alternating samples each, and keeps the lower median; then dense and auto
alternate ``--repeats`` times (median and range). The backend that ran is ``last_backend()``.

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_auto_backend.py [--tokens 8192] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts

import torch.nn.functional as F  # noqa: E402

from headlab import patterns as P  # noqa: E402
from headlab.bench.inputs import random_qkv, script_args  # noqa: E402
from headlab.kernels import autotune, last_backend, sparse_attend  # noqa: E402
from headlab.timing import alternate, spread, timed  # noqa: E402


def _fmt(xs: list[float]) -> str:
    s = spread(xs)
    return f"{s['median']:.3f} s [{s['min']:.3f}–{s['max']:.3f}]"


def main() -> None:
    a = script_args(__doc__)
    T = a.tokens
    if T < autotune.FLEX_MIN_T:
        raise SystemExit(f"--tokens must be >= {autotune.FLEX_MIN_T} (auto only measures FlexAttention from there), got {T}")
    q, k, v = random_qkv(T)
    ke, ve = k.repeat_interleave(3, 1), v.repeat_interleave(3, 1)
    print(f"T={T}, 9/3 heads, d=64, fp32, {a.threads} threads, {a.repeats} alternating repeats after the choice")
    for name, p in [
        ("window(256)", P.window(256)),
        ("sink_window(64,256)", P.sink_window(64, 256)),
        ("power(64,4,1)", P.power(64, 4, 1)),
    ]:
        first = timed(lambda p=p: sparse_attend(q, k, v, p))[0]
        dec = next(d for key, d in autotune.DECISIONS.items() if key[0] == p.describe() and key[1] == T)
        meds = ", ".join(f"{n} {dec.median(n):.3f} s" for n in dec.samples)
        t = alternate(
            {
                "dense": lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=True),
                "auto": lambda p=p: sparse_attend(q, k, v, p),
            },
            a.repeats,
            warmup=0,
            reverse=False,
        )
        td, ta = t.wall["dense"], t.wall["auto"]
        print(
            f"{name}: auto chose {dec.backend} (medians: {meds}{'; failed: ' + str(dec.failed) if dec.failed else ''}), "
            f"first call incl. measurement {first:.1f} s; dense {_fmt(td)}, auto ({last_backend()}) {_fmt(ta)}, "
            f"speedup {t.median('dense') / t.median('auto'):.2f}x"
        )


if __name__ == "__main__":
    main()
