"""Power of the exact McNemar test (McNemar 1947) for paired 0/1 outcomes: which accuracy difference a given
number of items can detect, given how often two configurations disagree (the discordance).

With n paired items, discordant pairs D ~ Binomial(n, d) (d = p10 + p01, the discordance) and, given D, the
pairs won by the first configuration X ~ Binomial(D, p10 / d). The exact two-sided test rejects when the
binomial p-value of X out of D at 1/2 is below alpha. ``power`` sums that rejection probability exactly;
``detectable_difference`` is the smallest |p10 - p01| (the accuracy difference) with power >= the target at a
given discordance. Used to state what the long-context suite (RULER, arXiv 2404.06654) can resolve at a size.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import stats


def _check(n: int, d: float, alpha: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (paired items), got {n!r}")
    if not 0 <= d <= 1:
        raise ValueError(f"discordance must be in [0, 1], got {d!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


@functools.lru_cache(maxsize=64)
def _critical(n: int, alpha: float) -> np.ndarray:
    """For each D in 0..n, the smallest x >= D/2 whose two-sided exact p-value at 1/2 is < alpha (D + 1: never)."""
    out = np.empty(n + 1, dtype=np.int64)
    for D in range(n + 1):
        x = np.arange(D + 1)
        p = np.minimum(1.0, 2 * np.minimum(stats.binom.cdf(x, D, 0.5), stats.binom.sf(x - 1, D, 0.5)))
        hi = np.nonzero((2 * x >= D) & (p < alpha))[0]
        out[D] = int(hi[0]) if hi.size else D + 1
    return out


def power(n: int, p10: float, p01: float, alpha: float = 0.05) -> float:
    """Exact power of the two-sided exact McNemar test with ``n`` pairs, P(first right, second wrong) = ``p10``,
    P(first wrong, second right) = ``p01``."""
    if p10 < 0 or p01 < 0:
        raise ValueError(f"p10 and p01 must be >= 0, got {p10}, {p01}")
    d = p10 + p01
    _check(n, d, alpha)
    if d == 0:
        return 0.0
    crit = _critical(n, alpha)
    q = p10 / d
    D = np.arange(n + 1)
    ok = crit <= D
    c = np.where(ok, crit, 0)
    # symmetric rejection region: X >= c or X <= D - c (the lower tail only when it does not overlap)
    upper = stats.binom.sf(c - 1, D, q)
    lower = np.where(D - c < c, stats.binom.cdf(D - c, D, q), 0.0)
    rej = np.where(ok & (D > 0), np.minimum(1.0, upper + lower), 0.0)
    return float((stats.binom.pmf(D, n, d) * rej).sum())


def detectable_difference(n: int, discordance: float, alpha: float = 0.05, target: float = 0.8) -> float:
    """The smallest accuracy difference |p10 - p01| that ``n`` paired items detect with power >= ``target`` when
    the two configurations disagree on a share ``discordance`` of the items; NaN when even the largest possible
    difference (= the discordance) does not reach it."""
    _check(n, discordance, alpha)
    if not 0 < target < 1:
        raise ValueError(f"target power must be in (0, 1), got {target!r}")
    d = discordance
    if d == 0 or power(n, d, 0.0, alpha) < target:
        return math.nan
    lo, hi = 0.0, d
    for _ in range(30):
        mid = (lo + hi) / 2
        if power(n, (d + mid) / 2, (d - mid) / 2, alpha) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def power_table(sizes, discordances, alpha: float = 0.05, target: float = 0.8) -> list[dict]:
    """Rows {"n", "discordance", "detectable"} of :func:`detectable_difference` (for docs and claims)."""
    return [
        {"n": n, "discordance": d, "detectable": detectable_difference(n, d, alpha, target)} for n in sizes for d in discordances
    ]
