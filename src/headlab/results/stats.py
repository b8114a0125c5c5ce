"""Intervals and paired tests for published numbers, from scipy (no hand-written statistics).

* :func:`proportion` — a proportion k/n with its Wilson score interval (Wilson 1927) or the exact
  Clopper–Pearson interval; 0/16 gives [0, 0.19], never [0, 0].
* :func:`paired_difference` — mean of paired differences a_i − b_i on the same items with a paired
  percentile bootstrap interval (``scipy.stats.bootstrap(paired=True)``) and, for 0/1 outcomes, the exact
  McNemar test (binomial test on the discordant pairs, McNemar 1947).

Every result is a plain dict ``{"value", "ci": [lo, hi], "n", ...}`` so the item count always travels with
the number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

METHODS = ("wilson", "exact")


def _array(x, name: str) -> np.ndarray:
    a = np.asarray(getattr(x, "numpy", lambda: x)() if hasattr(x, "detach") else x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{name}: empty sample (need >= 1 item)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: sample has non-finite values")
    return a


def proportion(k: int | Sequence[float], n: int | None = None, level: float = 0.95, method: str = "wilson") -> dict:
    """k successes of n (or a 0/1 sample as ``k``) -> {"value": k/n, "ci": [lo, hi], "n": n, "k": k}."""
    if not 0 < level < 1:
        raise ValueError(f"level={level} must be in (0, 1)")
    if method not in METHODS:
        raise ValueError(f"method={method!r}; valid: {METHODS}")
    if n is None:
        a = _array(k, "proportion")
        if not np.all((a == 0) | (a == 1)):
            raise ValueError("proportion: a sample must hold only 0/1 outcomes")
        k, n = int(a.sum()), int(a.size)
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"proportion: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method=method)
    return {"value": k / n, "ci": [float(ci.low), float(ci.high)], "n": n, "k": k, "interval": f"{method} {round(level * 100)}%"}


def paired_difference(a, b, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of a_i − b_i (same items) with a paired percentile bootstrap interval; McNemar for 0/1 data."""
    x, y = _array(a, "paired_difference a"), _array(b, "paired_difference b")
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must be in (0, 1)")
    d = x - y
    out = {"value": float(d.mean()), "n": int(d.size), "interval": f"paired bootstrap {round(level * 100)}%"}
    if np.all(d == d[0]) or d.size < 2:
        out["ci"] = [float(d[0]), float(d[0])] if np.all(d == d[0]) else [float("nan")] * 2
    else:
        res = stats.bootstrap(
            (x, y),
            lambda u, v, axis=-1: (u - v).mean(axis),
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=level,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        out["ci"] = [float(res.confidence_interval.low), float(res.confidence_interval.high)]
    if np.all(np.isin(x, (0, 1))) and np.all(np.isin(y, (0, 1))):
        up, down = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
        p = 1.0 if up + down == 0 else float(stats.binomtest(up, up + down, 0.5).pvalue)
        out.update({"a_only": up, "b_only": down, "mcnemar_p": p})
    return out


def fmt(num: dict, scale: float = 1.0, digits: int = 1, signed: bool = False) -> str:
    """'68.0 [60.7, 74.7] (n=150)' for a number dict (``scale=100`` for percent)."""
    s = "+" if signed else ""
    v = f"{num['value'] * scale:{s}.{digits}f}"
    if num.get("ci") and all(np.isfinite(num["ci"])):
        lo, hi = (c * scale for c in num["ci"])
        v += f" [{lo:{s}.{digits}f}, {hi:{s}.{digits}f}]"
    if "k" in num:
        v += f" ({num['k']}/{num['n']})"
    elif "n" in num:
        v += f" (n={num['n']})"
    return v


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval of k/n (the ``ci`` of :func:`proportion`)."""
    lo, hi = proportion(k, n, level)["ci"]
    return lo, hi
